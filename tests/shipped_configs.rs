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

/// The shipped NATS config is valid for the nats-server on PATH when every password it
/// reads is in the environment, and refuses to start when one is missing (no silent
/// default password).
#[test]
fn the_shipped_nats_config_is_valid_and_needs_every_password() {
    let conf = immune_testkit::shipped_nats_conf();
    let check = |without: Option<&str>| {
        let mut command = std::process::Command::new("nats-server");
        command.arg("-c").arg(&conf).arg("-t");
        for user in immune_testkit::NATS_USERS {
            let var = immune_testkit::nats_password_var(user);
            command.env_remove(&var);
            if Some(user) != without {
                command.env(var, format!("test{user}"));
            }
        }
        command.output().expect("nats-server on PATH")
    };
    let all = check(None);
    assert!(
        all.status.success(),
        "nats-server -t refuses nats/nats-server.conf: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    let missing = check(Some("decider"));
    assert!(
        !missing.status.success(),
        "started without the decider's password"
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("IMMUNE_DECIDER_NATS_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// The permissions in nats-server.conf name the contract's streams, durable consumers and
/// buckets: renaming one in `nats/src/streams.rs` without the config fails here.
#[test]
fn the_shipped_nats_config_names_the_contracts_streams_consumers_and_buckets() {
    use immune_nats::streams;
    let text = std::fs::read_to_string(immune_testkit::shipped_nats_conf()).expect("conf");
    for user in immune_testkit::NATS_USERS {
        assert!(text.contains(&format!("user: {user}\n")), "no user {user}");
    }
    for stream in streams::ALL_STREAMS {
        assert!(
            text.contains(&format!("$JS.API.STREAM.CREATE.{}\"", stream.name)),
            "stream {} cannot be provisioned",
            stream.name
        );
    }
    for consumer in [
        streams::DETECTOR_METRICS,
        streams::DETECTOR_EVENTS,
        streams::DECIDER,
        streams::EXECUTOR,
        streams::CHAOS,
    ] {
        let next = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            consumer.stream.name, consumer.durable
        );
        let by_stream = format!("$JS.API.CONSUMER.MSG.NEXT.{}.>", consumer.stream.name);
        assert!(
            text.contains(&format!("\"{next}\"")) || text.contains(&format!("\"{by_stream}\"")),
            "nobody may pull from consumer {}",
            consumer.durable
        );
    }
    for bucket in [
        streams::EXECUTOR_RESULTS,
        streams::EXECUTOR_LOCKS,
        streams::CHAOS_FAULTS,
        streams::CHAOS_CONTROL,
        streams::DETECTOR_MODELS,
        streams::DECIDER_CONTROL,
        streams::DECIDER_VALUES,
    ] {
        assert!(
            text.contains(&format!("$JS.API.STREAM.CREATE.KV_{}\"", bucket.name)),
            "bucket {} cannot be created",
            bucket.name
        );
    }
}
