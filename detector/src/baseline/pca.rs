//! The PCA fit behind [`Model`](super::Model): linfa-reduction with fewer components when the
//! baseline has a lower rank, its panics caught without printing them, so a bad baseline
//! cannot take the detector down.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::Array2;

/// linfa-reduction's PCA with `most` components, then fewer when the baseline has a lower
/// rank than asked for. Its iterative SVD can panic on such data instead of returning an
/// error, so the panic is caught here: a bad baseline must not take the detector down.
pub(super) fn fit_pca(data: &Array2<f64>, most: usize) -> Option<Pca<f64>> {
    let mut k = most;
    while k > 0 {
        let dataset = DatasetBase::from(data.clone());
        match quietly(|| Pca::params(k).fit(&dataset)) {
            Ok(Ok(pca)) => {
                let finite = pca.singular_values().iter().all(|v| v.is_finite())
                    && pca.components().iter().all(|v| v.is_finite());
                if finite {
                    return Some(pca);
                }
                tracing::debug!(
                    components = k,
                    "PCA gave non-finite values; fewer components"
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(components = k, error = %e, "PCA failed; fewer components")
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::debug!(components = k, panic = %message, "PCA panicked; fewer components");
            }
        }
        k /= 2;
    }
    None
}

thread_local! {
    /// Set while [`quietly`] runs: the panic hook stays silent on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without the default hook printing it (and its backtrace) to
/// stderr: the caller handles the failure and logs it. Panics elsewhere print as before.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_returned_and_the_hook_is_quiet_only_inside() {
        let caught = quietly(|| -> u32 { panic!("linfa gave up") });
        let payload = caught.expect_err("the panic is returned");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"linfa gave up"));
        assert!(!QUIET.with(std::cell::Cell::get), "quiet only inside");
        assert_eq!(quietly(|| 3).expect("no panic"), 3);
    }
}
