//! Every shipped example config parses and validates as the stage would read it, and a
//! mistyped key is refused with its name.

use std::path::PathBuf;

use immune_runtime::config;

fn path(stage: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../{stage}/{stage}.toml"))
}

#[test]
fn every_shipped_config_parses_and_validates() {
    let c: immune_collector::Config =
        config::load(immune_collector::STAGE, Some(&path("collector"))).expect("collector.toml");
    c.validate().expect("collector.toml valid");
    let c: immune_detector::Config =
        config::load(immune_detector::STAGE, Some(&path("detector"))).expect("detector.toml");
    c.validate().expect("detector.toml valid");
    let c: immune_decider::Config =
        config::load(immune_decider::STAGE, Some(&path("decider"))).expect("decider.toml");
    c.validate().expect("decider.toml valid");
    assert_eq!(
        c.policy.load_playbook().expect("playbook"),
        immune_decider::Playbook::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../decider/playbook.toml")
        )
        .expect("decider/playbook.toml"),
        "shipped playbook is the default one"
    );
    let c: immune_executor::Config =
        config::load(immune_executor::STAGE, Some(&path("executor"))).expect("executor.toml");
    c.validate().expect("executor.toml valid");
    let c: immune_chaos::Config =
        config::load(immune_chaos::STAGE, Some(&path("chaos"))).expect("chaos.toml");
    c.validate().expect("chaos.toml valid");
}

#[test]
fn a_mistyped_key_is_named() {
    let err =
        config::parse::<immune_decider::Config>("[policy]\ncooldown = 5").expect_err("unknown key");
    assert!(err.to_string().contains("cooldown"), "{err}");
    let err = immune_decider::Playbook::parse("[[crashed]]\naction = \"reboot\"\nrisk = 1")
        .expect_err("unknown action");
    assert!(err.to_string().contains("reboot"), "{err}");
    let c = config::parse::<immune_collector::Config>("interval_ms = 50").expect("parses");
    assert!(c
        .validate()
        .expect_err("too fast")
        .to_string()
        .contains("interval_ms"));
}
