//! Per-recipient verdicts, the headers cordon writes and removes, skip
//! rules, and large verdicts.

use super::*;

#[test]
fn per_recipient_verdicts() {
    let env = envelope(&["a@in.test", "b@in.test", "c@in.test"]);
    let rv = |addr: &str, action: RecipientAction| RecipientVerdict {
        address: addr.into(),
        action,
        rules: vec!["R".into()],
    };
    let mk = |rvs: Vec<RecipientVerdict>| {
        let mut v = verdict(Outcome::Clean);
        v.recipients = rvs;
        EngineOutcome::Verdict(v)
    };
    let judge = |p: &Policy, outcome: EngineOutcome| {
        decide(
            p,
            &results(vec![outcome]),
            &[],
            Context {
                envelope: &env,
                header_names: &[],
                scan_id: "ID",
                host: None,
            },
        )
    };
    // Drop one (address matched without brackets, any case); one unknown.
    let d = judge(
        &Policy::default(),
        mk(vec![
            rv("B@in.test", RecipientAction::Drop),
            rv("z@in.test", RecipientAction::Drop),
        ]),
    );
    assert_eq!(d.action, Action::Accept);
    assert_eq!(d.recipients, [RecipientEdit::Delete("<b@in.test>".into())]);
    assert_eq!(d.ignored.len(), 1, "{:?}", d.ignored);
    // Drop all: discard.
    let all = mk(vec![
        rv("a@in.test", RecipientAction::Drop),
        rv("b@in.test", RecipientAction::Drop),
        rv("c@in.test", RecipientAction::Drop),
    ]);
    let d = judge(&Policy::default(), all);
    assert_eq!(d.action, Action::Discard);
    assert!(d.recipients.is_empty() && d.add_headers.is_empty());
    // Alternate as a header (default), then as a replacement.
    let alt = mk(vec![rv(
        "c@in.test",
        RecipientAction::Alternate("spam@quarantine.test".into()),
    )]);
    let d = judge(&Policy::default(), alt.clone());
    assert!(d.recipients.is_empty());
    assert_eq!(
        header(&d, "X-Cordon-Alternate"),
        Some("<c@in.test> spam@quarantine.test")
    );
    assert_eq!(d.rules, ["e0:R"]);
    let mut p = Policy::default();
    p.headers.alternate = AlternateMode::Replace;
    let d = judge(&p, alt);
    assert_eq!(
        d.recipients,
        [
            RecipientEdit::Delete("<c@in.test>".into()),
            RecipientEdit::Add("<spam@quarantine.test>".into())
        ]
    );
    // A location that is not an address is not used as one.
    let d = judge(
        &p,
        mk(vec![rv(
            "c@in.test",
            RecipientAction::Alternate("a b <x>".into()),
        )]),
    );
    assert!(d.recipients.is_empty() && d.ignored.len() == 1);
    // Drop outranks deliver and alternate from another engine.
    let d = decide(
        &Policy::default(),
        &results(vec![
            mk(vec![rv(
                "a@in.test",
                RecipientAction::Alternate("x@y.test".into()),
            )]),
            mk(vec![rv("a@in.test", RecipientAction::Drop)]),
        ]),
        &[],
        Context {
            envelope: &env,
            header_names: &[],
            scan_id: "ID",
            host: None,
        },
    );
    assert_eq!(d.recipients, [RecipientEdit::Delete("<a@in.test>".into())]);
    // Not applied when the message is refused.
    let mut rejected = verdict(Outcome::Detected(vec![Threat {
        name: "V".into(),
        kind: ThreatKind::Virus,
        part: String::new(),
    }]));
    rejected.recipients = vec![rv("a@in.test", RecipientAction::Drop)];
    let d = judge(&Policy::default(), EngineOutcome::Verdict(rejected));
    assert_eq!(d.action, Action::Reject);
    assert!(d.recipients.is_empty());
}

#[test]
fn headers_for_clean_virus_and_spam() {
    let d = run(&Policy::default(), vec![clean()]);
    assert_eq!(
        header(&d, "X-Virus-Scanned"),
        Some(concat!("cordon ", env!("CARGO_PKG_VERSION"), " at mx.test"))
    );
    assert_eq!(header(&d, "X-Virus-Status"), Some("Clean"));
    assert_eq!(header(&d, "X-Spam-Flag"), None);
    assert_eq!(header(&d, "X-Cordon-Scan"), Some("id=ID; e0=clean"));

    let tag_all = with_rules(
        "e0",
        EngineRules {
            on_detect: OnDetect::all(DetectAction::Tag),
            ..EngineRules::default()
        },
    );
    let d = run(&tag_all, vec![virus("Eicar-Test-Signature")]);
    assert_eq!(d.action, Action::Accept);
    assert_eq!(
        header(&d, "X-Virus-Status"),
        Some("Infected (Eicar-Test-Signature)")
    );

    let mut gtube = verdict(Outcome::Detected(vec![Threat {
        name: "GTUBE".into(),
        kind: ThreatKind::Spam,
        part: String::new(),
    }]));
    gtube.spam_score = Some(1000.0);
    gtube.rules = vec!["GTUBE".into()];
    let d = run(&tag_all, vec![EngineOutcome::Verdict(gtube)]);
    assert_eq!(header(&d, "X-Spam-Flag"), Some("YES"));
    assert_eq!(header(&d, "X-Spam-Score"), Some("1000.0"));
    assert_eq!(
        header(&d, "X-Spam-Status"),
        Some("Yes, score=1000.0 required=5.0 tests=GTUBE")
    );
    assert_eq!(header(&d, "X-Virus-Status"), Some("Clean"));
    assert_eq!(header(&d, "X-Cordon-Rules"), Some("e0:GTUBE"));

    // A score under the threshold: flagged NO, SpamAssassin's `tests=none`.
    let mut low = verdict(Outcome::Clean);
    low.spam_score = Some(1.25);
    let d = run(&Policy::default(), vec![EngineOutcome::Verdict(low)]);
    assert_eq!(header(&d, "X-Spam-Flag"), Some("NO"));
    assert_eq!(
        header(&d, "X-Spam-Status"),
        Some("No, score=1.2 required=5.0 tests=none")
    );

    // No headers on refusals, none at all when switched off.
    assert!(
        run(&Policy::default(), vec![virus("V")])
            .add_headers
            .is_empty()
    );
    let mut off = Policy::default();
    off.headers.add = false;
    assert!(run(&off, vec![clean()]).add_headers.is_empty());
}

#[test]
fn forged_headers_are_removed_by_occurrence() {
    let mut p = Policy::default();
    p.headers.engine_headers = vec!["X-Vendor-*".into()];
    let names: Vec<String> = [
        "Received",
        "x-virus-status",
        "Subject",
        "X-Virus-Status",
        "X-Spam-Flag",
        "X-Vendor-Score",
        "X-Other",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = envelope(&["a@in.test"]);
    for outcome in [clean(), virus("V")] {
        let d = decide(
            &p,
            &results(vec![outcome]),
            &[],
            Context {
                envelope: &env,
                header_names: &names,
                scan_id: "ID",
                host: None,
            },
        );
        let got: Vec<(&str, u32)> = d
            .remove_headers
            .iter()
            .map(|r| (r.name.as_str(), r.index))
            .collect();
        assert_eq!(
            got,
            [
                ("x-virus-status", 1),
                ("X-Virus-Status", 2),
                ("X-Spam-Flag", 1),
                ("X-Vendor-Score", 1)
            ]
        );
    }
}

#[test]
fn engine_headers_pass_only_by_name_list() {
    let mut v = verdict(Outcome::Clean);
    v.headers = vec![
        Header {
            name: "X-Vendor-Score".into(),
            value: "7".into(),
        },
        Header {
            name: "Subject".into(),
            value: "pwned".into(),
        },
        Header {
            name: "X-Virus-Status".into(),
            value: "Clean".into(),
        },
    ];
    let mut p = Policy::default();
    p.headers.engine_headers = vec!["x-vendor-*".into(), "X-Virus-Status".into()];
    let d = run(&p, vec![EngineOutcome::Verdict(v)]);
    assert_eq!(header(&d, "X-Vendor-Score"), Some("7"));
    assert_eq!(header(&d, "Subject"), None);
    // Our own header is ours alone: the one copy is the host's.
    assert_eq!(
        d.add_headers
            .iter()
            .filter(|(n, _)| n == "X-Virus-Status")
            .count(),
        1
    );
    assert_eq!(d.ignored.len(), 2, "{:?}", d.ignored);
}

#[test]
fn skip_rules() {
    let rules = SkipRules {
        client_networks: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        authenticated: true,
        sender_domains: vec!["trusted.test".into(), ".corp.test".into()],
        recipient_domains: vec!["archive.test".into()],
        larger_than_bytes: Some(1000),
    };
    let base = envelope(&["a@in.test"]);
    type Edit = Box<dyn Fn(&mut Envelope)>;
    let table: Vec<(Edit, u64, Option<&str>)> = vec![
        (Box::new(|_| {}), 10, None),
        (
            Box::new(|e| e.client_address = Some(IpAddress::Ipv4((10, 1, 2, 3)))),
            10,
            Some("client-network"),
        ),
        (
            Box::new(|e| e.client_address = Some(IpAddress::Ipv4((11, 1, 2, 3)))),
            10,
            None,
        ),
        (
            Box::new(|e| {
                e.client_address = Some(IpAddress::Ipv6((0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
            }),
            10,
            Some("client-network"),
        ),
        (
            Box::new(|e| e.authenticated_user = Some("alice".into())),
            10,
            Some("authenticated"),
        ),
        (
            Box::new(|e| e.mail_from = "<x@Trusted.Test>".into()),
            10,
            Some("sender-domain"),
        ),
        (
            Box::new(|e| e.mail_from = "<x@eu.corp.test>".into()),
            10,
            Some("sender-domain"),
        ),
        (Box::new(|e| e.mail_from = "<x@corp.test>".into()), 10, None),
        (
            Box::new(|e| e.mail_from = "<x@notcorp.test>".into()),
            10,
            None,
        ),
        (Box::new(|e| e.mail_from = "<>".into()), 10, None),
        (
            Box::new(|e| *e = envelope(&["a@archive.test", "b@ARCHIVE.test"])),
            10,
            Some("recipient-domain"),
        ),
        (
            Box::new(|e| *e = envelope(&["a@archive.test", "b@in.test"])),
            10,
            None,
        ),
        (Box::new(|_| {}), 1000, None),
        (Box::new(|_| {}), 1001, Some("size")),
    ];
    for (i, (edit, size, want)) in table.into_iter().enumerate() {
        let mut e = base.clone();
        edit(&mut e);
        assert_eq!(
            rules.reason(&e, size).map(SkipReason::as_str),
            want,
            "row {i}: {e:?}"
        );
    }
    assert_eq!(SkipRules::default().reason(&base, u64::MAX), None);
}

#[test]
fn skipped_engines_are_reported_and_headers_say_so() {
    let env = envelope(&["a@in.test"]);
    let skipped = [Skipped {
        engine: "e9".into(),
        reason: SkipReason::Authenticated,
    }];
    let d = decide(
        &Policy::default(),
        &[],
        &skipped,
        Context {
            envelope: &env,
            header_names: &[],
            scan_id: "ID",
            host: None,
        },
    );
    assert_eq!(d.action, Action::Accept);
    // Nothing was scanned, so nothing claims it was.
    assert_eq!(header(&d, "X-Virus-Scanned"), None);
    assert_eq!(
        header(&d, "X-Cordon-Scan"),
        Some("id=ID; e9=skipped:authenticated")
    );
}

#[test]
fn a_thousand_recipient_verdicts_with_256_rules_each_are_judged_once() {
    // Every verdict for the one envelope recipient, every rule distinct:
    // 256,000 rules for one recipient, each kept once, in order; verdicts
    // for strangers noted a bounded number of times.
    let env = envelope(&["victim@in.test"]);
    let mut v = verdict(Outcome::Clean);
    v.recipients = (0..1000)
        .map(|i| RecipientVerdict {
            address: if i % 2 == 0 {
                "<victim@in.test>".into()
            } else {
                format!("stranger{i}@out.test")
            },
            action: RecipientAction::Deliver,
            rules: (0..256).map(|r| format!("R{i}.{r}")).collect(),
        })
        .collect();
    let d = decide(
        &Policy::default(),
        &results(vec![EngineOutcome::Verdict(v)]),
        &[],
        Context {
            envelope: &env,
            header_names: &[],
            scan_id: "ID",
            host: None,
        },
    );
    assert_eq!(d.rules.len(), 500 * 256);
    assert_eq!(d.rules[0], "e0:R0.0");
    assert_eq!(d.rules[1], "e0:R0.1");
    assert_eq!(d.ignored.len(), 11, "{:?}", &d.ignored[10..]);
    assert!(d.ignored[10].starts_with("490 more"), "{}", d.ignored[10]);
    let rules = header(&d, "X-Cordon-Rules").unwrap();
    assert!(rules.len() <= HEADER_VALUE_BYTES, "{}", rules.len());
    assert!(rules.ends_with("more)"), "{rules}");
}
