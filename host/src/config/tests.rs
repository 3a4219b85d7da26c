//! Config validation: defaults, errors that name the key, the policy
//! rules, listen addresses, ranges.

mod basics {
    use crate::config::*;
    use crate::engine::EngineLimits;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        Config::parse(text, Path::new("/etc/cordon/cordon.toml"))?
            .validate(Path::new("/etc/cordon/cordon.toml"))
    }

    #[test]
    fn minimal_engine_gets_defaults_and_resolves_relative_path() {
        let c = parse("[engines.testsig]\ncomponent = \"engines/testsig.wasm\"\n").unwrap();
        assert_eq!(c.registry.engines.len(), 1);
        let e = &c.registry.engines[0];
        assert_eq!(e.component, Path::new("/etc/cordon/engines/testsig.wasm"));
        assert_eq!(e.limits, EngineLimits::default());
        assert_eq!(
            c.registry.pool_instances,
            EngineLimits::default().max_concurrency
        );
    }

    #[test]
    fn capabilities_are_granted_by_name_and_unknown_ones_refused() {
        use crate::engine::Capability;
        let c = parse(
            "[engines.t]\ncomponent = \"t.wasm\"\ncapabilities = [\"store\", \"dns\", \"dns\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.registry.engines[0].capabilities,
            [Capability::Store, Capability::Dns]
        );
        let c = parse("[engines.t]\ncomponent = \"t.wasm\"\n").unwrap();
        assert!(c.registry.engines[0].capabilities.is_empty());
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\ncapabilities = [\"network\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.t.capabilities"), "{err}");
        assert!(
            err.contains("unknown capability \"network\" (there are: dns, store)"),
            "{err}"
        );
    }

    #[test]
    fn dns_servers_take_an_optional_port_and_bad_ones_name_the_key() {
        let c = parse(
            "[dns]\nservers = [\"127.0.0.1\", \"127.0.0.1:5353\", \"[::1]:53\"]\n\
             timeout_ms = 500\nmax_queries_per_scan = 5\n\
             [engines.t]\ncomponent = \"t.wasm\"\n",
        )
        .unwrap();
        let d = &c.registry.dns;
        let servers: Vec<String> = d.servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(servers, ["127.0.0.1:53", "127.0.0.1:5353", "[::1]:53"]);
        assert_eq!(d.query_timeout, std::time::Duration::from_millis(500));
        assert_eq!(d.max_queries_per_scan, 5);
        let c = parse("[engines.t]\ncomponent = \"t.wasm\"\n").unwrap();
        assert!(c.registry.dns.servers.is_empty(), "resolv.conf's");
        for (bad, key) in [
            ("servers = [\"dns.example\"]", "dns.servers"),
            ("servers = [\"127.0.0.1:0\"]", "dns.servers"),
            ("timeout_ms = 0", "dns.timeout_ms"),
            ("max_queries_per_scan = 100000", "dns.max_queries_per_scan"),
        ] {
            let err = parse(&format!(
                "[dns]\n{bad}\n[engines.t]\ncomponent = \"t.wasm\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn the_store_is_embedded_or_redis_and_bad_settings_name_the_key() {
        use crate::engine::capabilities::store::Backend;
        let c = parse(
            "[store]\npath = \"state/store.redb\"\nmax_ops_per_scan = 7\n\
             [engines.t]\ncomponent = \"t.wasm\"\n",
        )
        .unwrap();
        assert_eq!(
            c.registry.store.backend,
            Backend::Embedded {
                path: "/etc/cordon/state/store.redb".into()
            }
        );
        assert_eq!(c.registry.store.max_ops_per_scan, 7);
        let c = parse(
            "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n\
             [engines.t]\ncomponent = \"t.wasm\"\n",
        )
        .unwrap();
        assert_eq!(
            c.registry.store.backend,
            Backend::Redis {
                url: "redis://127.0.0.1:6379/0".into()
            }
        );
        for (bad, key) in [
            ("backend = \"memcached\"", "store.backend"),
            ("backend = \"redis\"", "store.url"),
            ("backend = \"redis\"\nurl = \"http://x\"", "store.url"),
            (
                "backend = \"redis\"\nurl = \"redis://x\"\npath = \"a\"",
                "store.path",
            ),
            ("url = \"redis://x\"", "store.url"),
            ("max_value_bytes = 0", "store.max_value_bytes"),
        ] {
            let err = parse(&format!(
                "[store]\n{bad}\n[engines.t]\ncomponent = \"t.wasm\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\ntimeout = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/cordon/cordon.toml"), "{msg}");
        assert!(msg.contains("unknown field `timeout`"), "{msg}");
    }

    #[test]
    fn out_of_range_limit_names_dotted_key() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nlimits.timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.t.limits.timeout_ms"), "{err}");
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nlimits.memory_mib = 9999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.t.limits.memory_mib"), "{err}");
    }

    #[test]
    fn no_enabled_engine_is_an_error() {
        let err = parse("[engines.t]\ncomponent = \"t.wasm\"\nenabled = false\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no enabled engine"), "{err}");
        assert!(parse("").is_err());
    }

    #[test]
    fn bad_engine_name_is_rejected() {
        let err = parse("[engines.\"a b\"]\ncomponent = \"t.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("engines.a b"), "{err}");
    }

    #[test]
    fn pool_defaults_to_sum_of_concurrency() {
        let c = parse(
            "[engines.a]\ncomponent = \"a.wasm\"\nlimits.max_concurrency = 3\n\
             [engines.b]\ncomponent = \"b.wasm\"\nlimits.max_concurrency = 5\n",
        )
        .unwrap();
        assert_eq!(c.registry.pool_instances, 8);
        let c = parse("pool.max_instances = 2\n[engines.a]\ncomponent = \"a.wasm\"\n").unwrap();
        assert_eq!(c.registry.pool_instances, 2);
    }

    #[test]
    fn engines_from_components_get_unique_names() {
        let c = Config::from_components(&[
            PathBuf::from("x/testsig.wasm"),
            PathBuf::from("y/testsig.wasm"),
        ]);
        let names: Vec<_> = c.engines.keys().cloned().collect();
        assert_eq!(names, ["testsig", "testsig2"]);
    }

    #[test]
    fn engines_from_components_are_named_with_what_a_name_allows() {
        let c = Config::from_components(&[PathBuf::from("x/vendor-engine-1.2 (beta).wasm")]);
        let names: Vec<_> = c.engines.keys().cloned().collect();
        assert_eq!(names, ["vendor-engine-1_2__beta_"]);
        assert!(c.validate(Path::new("<command line>")).is_ok());
    }
}

mod policy_rules {
    use crate::bindings::ThreatKind;
    use crate::config::*;
    use crate::listen::ListenAddr;
    use crate::policy::{DetectAction, ErrorAction, OnError, kind_index};

    const PATH: &str = "/etc/cordon/cordon.toml";

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        Config::parse(text, Path::new(PATH))?.validate(Path::new(PATH))
    }

    #[test]
    fn actions_as_one_word_or_by_kind_and_engine_overrides() {
        let c = parse(
            r#"
            [policy]
            on_detect = "quarantine"
            on_error = { default = "tempfail", timeout = "accept" }
            reject.text = "No: %v"
            [engines.a]
            component = "a.wasm"
            on_detect = { spam = "tag" }
            reject = { code = 554 }
            [engines.b]
            component = "b.wasm"
            on_error = "accept"
            "#,
        )
        .unwrap();
        let a = c.registry.live.rules.policy.rules("a");
        assert_eq!(a.on_detect.get(ThreatKind::Virus), DetectAction::Quarantine);
        assert_eq!(a.on_detect.get(ThreatKind::Spam), DetectAction::Tag);
        assert_eq!(a.on_error.by_kind[0], ErrorAction::Accept);
        assert_eq!(a.on_error.by_kind[2], ErrorAction::Tempfail);
        assert_eq!(a.reject.to_string(), "554 5.7.1 No: %v");
        let b = c.registry.live.rules.policy.rules("b");
        assert_eq!(b.on_error, OnError::all(ErrorAction::Accept));
        assert_eq!(
            b.on_detect.by_kind[kind_index(ThreatKind::Spam)],
            DetectAction::Quarantine
        );
    }

    #[test]
    fn bad_policy_values_name_the_key() {
        let cases = [
            ("[policy]\non_detect = \"bounce\"\n", "bounce"),
            ("[policy]\non_error = { timout = \"accept\" }\n", "timout"),
            ("[policy]\nreject.code = 450\n", "policy.reject.code"),
            (
                "[policy]\ntempfail.status = \"5.7.1\"\n",
                "policy.tempfail.status",
            ),
            (
                "[policy]\nreject.text = \"a\\r\\nb\"\n",
                "policy.reject.text",
            ),
            (
                "[policy]\nskip.client_networks = [\"10.0.0.0/33\"]\n",
                "policy.skip.client_networks[0]",
            ),
            ("[milter]\nlisten = [\"tcp:25\"]\n", "milter.listen[0]"),
            (
                "[milter]\nlisten = [\"inet6:25@127.0.0.1\"]\n",
                "milter.listen[0]",
            ),
            ("[milter]\nsocket_mode = \"999\"\n", "milter.socket_mode"),
            (
                "[profiles]\nspam-drop = [\"nobody\"]\n",
                "profiles.spam-drop",
            ),
            (
                "[headers]\nengine_headers = [\"X-A: b\"]\n",
                "headers.engine_headers[0]",
            ),
        ];
        for (text, want) in cases {
            let text = format!("{text}[engines.t]\ncomponent = \"t.wasm\"\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains(PATH), "{err}");
        }
    }

    #[test]
    fn listen_addresses_in_postfix_notation() {
        let table = [
            ("unix:/run/cordon.sock", Some("unix:/run/cordon.sock")),
            ("inet:7357@127.0.0.1", Some("inet:7357@127.0.0.1")),
            ("inet:7357", Some("inet:7357@0.0.0.0")),
            ("inet:7357@localhost", Some("inet:7357@127.0.0.1")),
            ("inet6:7357@::1", Some("inet6:7357@::1")),
            ("inet6:7357@[::1]", Some("inet6:7357@::1")),
            ("inet:x@127.0.0.1", None),
            ("unix:", None),
        ];
        for (text, want) in table {
            let got = text.parse::<ListenAddr>().map(|a| a.to_string()).ok();
            assert_eq!(got.as_deref(), want, "{text}");
        }
    }

    #[test]
    fn every_number_has_a_range_and_errors_name_the_key() {
        let engine = "[engines.a]\ncomponent = \"a.wasm\"\n";
        for (line, key) in [
            ("pool.max_instances = 4294967295\n", "pool.max_instances"),
            ("pool.max_instances = 1000000\n", "pool.max_instances"),
            ("mime.max_depth = 6000\n", "mime.max_depth"),
            ("mime.max_parts = 0\n", "mime.max_parts"),
            ("mime.max_decode_ms = 0\n", "mime.max_decode_ms"),
            ("cache.max_entries = 100000000\n", "cache.max_entries"),
            ("reload.interval_ms = 1\n", "reload.interval_ms"),
            ("milter.max_sessions = 1000000\n", "milter.max_sessions"),
            ("milter.command_timeout_s = 0\n", "milter.command_timeout_s"),
            ("milter.max_headers = 0\n", "milter.max_headers"),
            ("headers.spam_threshold = nan\n", "headers.spam_threshold"),
        ] {
            let err = parse(&format!("{line}{engine}")).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
            assert!(err.contains("/etc/cordon/cordon.toml"), "{err}");
        }
        for (line, key) in [
            (
                "limits.max_concurrency = 4294967295\n",
                "limits.max_concurrency",
            ),
            ("limits.max_verdict_bytes = 1\n", "limits.max_verdict_bytes"),
            ("limits.max_component_mib = 0\n", "limits.max_component_mib"),
            ("limits.init_timeout_ms = 0\n", "limits.init_timeout_ms"),
            ("limits.max_threats = 0\n", "limits.max_threats"),
            (
                "limits.max_string_bytes = 4294967295\n",
                "limits.max_string_bytes",
            ),
        ] {
            let err = parse(&format!("{engine}{line}")).unwrap_err().to_string();
            assert!(err.contains(&format!("engines.a.{key}")), "{line}: {err}");
        }
        // Within range, the pool's reservation is still checked.
        let err = parse(&format!(
            "pool.max_instances = 1024\n{engine}limits.memory_mib = 4095\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pool.max_instances") && err.contains("address space"),
            "{err}"
        );
    }
}
