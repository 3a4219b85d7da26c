//! scratch
use std::sync::Arc;
#[test]
fn scratch() {
    let _ = tracing_subscriber::fmt().with_env_filter("debug").try_init();
    let spec = cordon::config::EngineSpec {
        name: "testsig".into(),
        component: "../target/wasm32-wasip2/release/testsig.wasm".into(),
        enabled: true,
        settings: [("definitions_version".to_string(), "2026-11-22".to_string())].into(),
        limits: Default::default(),
    };
    let rt = cordon::engine::Runtime::with_pool(4, 256 << 20, "/tmp/scratch/cache".into()).unwrap();
    let t = std::time::Instant::now();
    let g = rt.load(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded in {:?}: {:?}", t.elapsed(), g.info);
    let env = cordon::bindings::Envelope { client_address: None, client_name: String::new(), helo: String::new(), mail_from: String::new(), recipients: vec![], authenticated_user: None, queue_id: None };
    let msg = format!("Subject: t\r\n\r\n{}\r\n", std::str::from_utf8(testsig::matcher::EICAR).unwrap());
    let t = std::time::Instant::now();
    let o = g.scan_blocking(&env, msg.as_bytes());
    eprintln!("scan {:?}: {:?}", t.elapsed(), o);
    let _ = Arc::new(1);
}
