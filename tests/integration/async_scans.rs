//! Scans run as async calls on the worker that asks (`engine::async_scan`):
//! a slow or hanging engine shares the worker until its timeout instead of
//! holding it.

use std::sync::{Arc, Mutex};

use cordon::engine::EngineOutcome;
use cordon::scan::{Message, scan_message};

use crate::common::*;

/// On a runtime with one worker thread, a hanging engine's scan and a
/// quick scan are polled together, the hanging one first: the quick one
/// finishes first, and the hanging one ends as a timeout. Were the
/// hanging scan to hold the worker until its timeout, the quick one could
/// not even start before it ended.
#[test]
fn a_hanging_engine_does_not_hold_the_async_worker() {
    let reg = registry_from_toml(&format!(
        "cache_dir = {}\n[engines.hang]\ncomponent = {}\nsettings.mode = \"loop\"\n\
         limits.timeout_ms = 1500\n[engines.testsig]\ncomponent = {}\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
        toml_path(&component("testsig")),
    ));
    let engines = reg.enabled();
    let pick = |name: &str| -> Vec<_> {
        engines
            .iter()
            .filter(|g| &*g.name == name)
            .cloned()
            .collect()
    };
    let (hang, quick) = (pick("hang"), pick("testsig"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let msg = Message::from_bytes(message("i", eicar()));
    rt.block_on(async {
        let slow = async {
            let r = scan_message(&hang, &msg, &Default::default()).await;
            order.lock().unwrap().push("hang");
            r
        };
        let fast = async {
            let r = scan_message(&quick, &msg, &Default::default()).await;
            order.lock().unwrap().push("testsig");
            r
        };
        let (slow, fast) = tokio::join!(slow, fast);
        assert!(
            matches!(&slow.results[0].outcome, EngineOutcome::Fault(f) if f.kind.as_str() == "timeout"),
            "{:?}",
            slow.results[0].outcome
        );
        assert!(matches!(
            fast.results[0].outcome,
            EngineOutcome::Verdict(_)
        ));
    });
    assert_eq!(*order.lock().unwrap(), ["testsig", "hang"]);
}
