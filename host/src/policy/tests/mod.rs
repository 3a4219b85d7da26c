//! The policy as tables: outcomes and rules in, a decision out.

use super::*;
use crate::bindings::{
    Envelope, Header, IpAddress, Recipient, RecipientAction, RecipientVerdict, Threat,
    UnscannableReason, empty_envelope,
};
use crate::engine::{FaultKind, ScanTiming};

use crate::bindings::verdict_of as verdict;
fn clean() -> EngineOutcome {
    EngineOutcome::Verdict(verdict(Outcome::Clean))
}
fn found(name: &str, kind: ThreatKind) -> EngineOutcome {
    EngineOutcome::Verdict(verdict(Outcome::Detected(vec![Threat {
        name: name.into(),
        kind,
        part: String::new(),
    }])))
}
fn virus(name: &str) -> EngineOutcome {
    found(name, ThreatKind::Virus)
}
fn fault(kind: FaultKind) -> EngineOutcome {
    EngineOutcome::fault(kind, "test")
}
fn unscannable() -> EngineOutcome {
    EngineOutcome::Verdict(verdict(Outcome::Unscannable(UnscannableReason::Encrypted)))
}
/// Engines are named e0, e1, ... in order.
fn results(outcomes: Vec<EngineOutcome>) -> Vec<EngineResult> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| EngineResult {
            engine: format!("e{i}").into(),
            generation: 1,
            outcome,
            timing: ScanTiming::default(),
            cached: false,
        })
        .collect()
}
fn envelope(rcpts: &[&str]) -> Envelope {
    let mut e = empty_envelope();
    e.mail_from = "<sender@outside.test>".into();
    e.recipients = rcpts
        .iter()
        .map(|a| Recipient {
            address: format!("<{a}>"),
            profiles: vec![],
        })
        .collect();
    e
}
fn run(policy: &Policy, outcomes: Vec<EngineOutcome>) -> Decision {
    let env = envelope(&["a@in.test"]);
    decide(
        policy,
        &results(outcomes),
        &[],
        Context {
            envelope: &env,
            header_names: &[],
            scan_id: "ID",
            host: Some("mx.test"),
        },
    )
}
fn with_rules(name: &str, rules: EngineRules) -> Policy {
    let mut p = Policy::default();
    p.engines.insert(name.into(), rules);
    p
}
fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    d.add_headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn most_severe_outcome_wins_with_default_rules() {
    use Action::*;
    let table: Vec<(Vec<EngineOutcome>, Action)> = vec![
        (vec![clean()], Accept),
        (vec![clean(), clean()], Accept),
        (vec![virus("V")], Reject),
        (vec![clean(), virus("V")], Reject),
        (vec![fault(FaultKind::Timeout)], Tempfail),
        (vec![clean(), fault(FaultKind::Trap)], Tempfail),
        (vec![fault(FaultKind::OutOfMemory), virus("V")], Reject),
        (vec![unscannable()], Tempfail),
        (vec![clean(), fault(FaultKind::MessageTooLarge)], Tempfail),
        (
            vec![fault(FaultKind::BadOutput), fault(FaultKind::Overloaded)],
            Tempfail,
        ),
        (vec![found("S", ThreatKind::Spam)], Reject),
        (vec![], Accept),
    ];
    for (i, (outcomes, want)) in table.into_iter().enumerate() {
        let d = run(&Policy::default(), outcomes);
        assert_eq!(d.action, want, "row {i}: {d:?}");
        assert_eq!(
            d.reply.is_some(),
            matches!(want, Reject | Tempfail),
            "row {i}"
        );
    }
}

#[test]
fn severity_order_across_configured_actions() {
    use Action::*;
    // e0 and e1 detect; their configured actions race.
    let table = [
        (DetectAction::Reject, DetectAction::Discard, Reject),
        (DetectAction::Discard, DetectAction::Quarantine, Discard),
        (DetectAction::Quarantine, DetectAction::Tempfail, Quarantine),
        (DetectAction::Tempfail, DetectAction::Tag, Tempfail),
        (DetectAction::Tag, DetectAction::Tag, Accept),
    ];
    for (a, b, want) in table {
        let mut p = Policy::default();
        for (name, act) in [("e0", a), ("e1", b)] {
            p.engines.insert(
                name.into(),
                EngineRules {
                    on_detect: OnDetect::all(act),
                    ..EngineRules::default()
                },
            );
        }
        let d = run(&p, vec![virus("A"), virus("B")]);
        assert_eq!(d.action, want, "{a:?} vs {b:?}");
        assert_eq!(d.quarantine.is_some(), want == Quarantine, "{a:?} vs {b:?}");
    }
    // A detection, even one only quarantined, outranks a fault.
    let p = with_rules(
        "e1",
        EngineRules {
            on_detect: OnDetect::all(DetectAction::Quarantine),
            ..EngineRules::default()
        },
    );
    let d = run(&p, vec![fault(FaultKind::Timeout), virus("V")]);
    assert_eq!(d.action, Quarantine);
    assert_eq!(d.quarantine.as_deref(), Some("cordon ID: V found"));
    // Tagging does not outrank a fault: fail-closed.
    let p = with_rules(
        "e1",
        EngineRules {
            on_detect: OnDetect::all(DetectAction::Tag),
            ..EngineRules::default()
        },
    );
    let d = run(&p, vec![fault(FaultKind::Timeout), virus("V")]);
    assert_eq!(d.action, Tempfail);
}

#[test]
fn on_detect_by_kind() {
    let mut on_detect = OnDetect::all(DetectAction::Reject);
    on_detect.by_kind[kind_index(ThreatKind::Spam)] = DetectAction::Tag;
    let p = with_rules(
        "e0",
        EngineRules {
            on_detect,
            ..EngineRules::default()
        },
    );
    assert_eq!(
        run(&p, vec![found("S", ThreatKind::Spam)]).action,
        Action::Accept
    );
    assert_eq!(
        run(&p, vec![found("V", ThreatKind::Virus)]).action,
        Action::Reject
    );
}

#[test]
fn on_error_by_fault_kind() {
    let kinds = [
        (fault(FaultKind::Timeout), "timeout"),
        (fault(FaultKind::OutOfMemory), "out-of-memory"),
        (fault(FaultKind::Trap), "trap"),
        (fault(FaultKind::BadOutput), "bad-output"),
        (fault(FaultKind::Overloaded), "overloaded"),
        (fault(FaultKind::MessageTooLarge), "message-too-large"),
        (unscannable(), "unscannable"),
    ];
    for (accepting, _) in ErrorKind::ALL.iter().enumerate() {
        // Accept exactly one kind; every other kind stays tempfail.
        let mut on_error = OnError::all(ErrorAction::Tempfail);
        on_error.by_kind[accepting] = ErrorAction::Accept;
        let p = with_rules(
            "e0",
            EngineRules {
                on_error,
                ..EngineRules::default()
            },
        );
        for (i, (outcome, name)) in kinds.iter().enumerate() {
            let d = run(&p, vec![outcome.clone()]);
            let want = if i == accepting {
                Action::Accept
            } else {
                Action::Tempfail
            };
            assert_eq!(
                d.action,
                want,
                "accepting {}, outcome {name}",
                ErrorKind::ALL[accepting].as_str()
            );
            assert!(d.failures[0].kind.to_string().starts_with(name));
            if want == Action::Accept {
                assert_eq!(
                    header(&d, "X-Virus-Status"),
                    Some(format!("Not scanned (e0: {})", d.failures[0].kind).as_str())
                );
            }
        }
    }
}

#[test]
fn replies_substitute_names_and_come_from_the_deciding_engine() {
    let d = run(
        &Policy::default(),
        vec![virus("Eicar-Test-Signature"), fault(FaultKind::Timeout)],
    );
    let reply = d.reply.unwrap();
    assert_eq!(reply.code, 550);
    assert_eq!(reply.status, "5.7.1");
    assert_eq!(reply.text, "Message rejected: Eicar-Test-Signature found");
    assert_eq!(d.failures[0].kind.to_string(), "timeout");

    let d = run(&Policy::default(), vec![fault(FaultKind::Timeout)]);
    assert_eq!(d.reply.unwrap().code, 451);

    // e1's own reject text; e0 is clean, so e1 decides. Names from an
    // engine are made printable and lose `%`.
    let p = with_rules(
        "e1",
        EngineRules {
            reject: Reply {
                code: 554,
                status: "5.7.0".into(),
                text: "Virus %v refused".into(),
            },
            ..EngineRules::default()
        },
    );
    let d = run(&p, vec![clean(), virus("Bad%s\r\nX")]);
    assert_eq!(
        d.reply.unwrap().to_string(),
        "554 5.7.0 Virus Bad_s??X refused"
    );
}

mod recipients_and_headers;

#[test]
fn smtp_paths_are_made_bare_addresses() {
    for (path, bare) in [
        ("<user@example.com>", "user@example.com"),
        (" <user@example.com> ", "user@example.com"),
        ("user@example.com", "user@example.com"),
        ("<@relay.test:user@example.com>", "user@example.com"),
        ("<@one.test,@two.test:user@example.com>", "user@example.com"),
        ("<>", ""),
        ("<postmaster>", "postmaster"),
    ] {
        assert_eq!(bare_address(path), bare, "{path}");
    }
}
