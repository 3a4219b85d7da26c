//! tally: a test engine for the `store` capability. It keeps what a spam
//! filter keeps, in miniature: counters across scans (scans, per sender),
//! and messages it was taught (`learn`), by digest, so that a taught
//! message is found again by any later scan, on any cordon sharing the
//! store.
//!
//! Its verdict's rules report what it read (`scans=N`, `from=N`,
//! `learned.spam=N`, `learned.ham=N`) or the error (`store:<error>`); a
//! message taught as spam is detected as `Tally.LearnedSpam`. The `mode`
//! setting makes it misuse the store: `flood` (12,000 keys in one call),
//! `big` (a 100 KiB value), `not-counter` (adds to a text value).

#[cfg(target_arch = "wasm32")]
mod component {
    use cordon_engine_sdk::capabilities::store::{self, IncrementEntry, SetEntry, StoreError};
    use cordon_engine_sdk::{
        Engine, Envelope, LearnClass, LearnOutcome, Settings, Threat, ThreatKind, Verdict,
        export_engine,
    };

    struct Tally {
        mode: String,
    }

    fn error_name(e: StoreError) -> &'static str {
        match e {
            StoreError::QuotaExhausted => "quota-exhausted",
            StoreError::TooLarge => "too-large",
            StoreError::Unavailable => "unavailable",
        }
    }

    /// FNV-1a, 64 bits: enough to name a test message.
    fn digest(message: &[u8]) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in message {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("msg:{h:016x}")
    }

    fn class_name(c: LearnClass) -> &'static str {
        match c {
            LearnClass::Spam => "spam",
            LearnClass::Ham => "ham",
            LearnClass::Virus => "virus",
            LearnClass::Clean => "clean",
        }
    }

    fn inc(key: &str) -> IncrementEntry {
        IncrementEntry {
            key: key.as_bytes().to_vec(),
            delta: 1,
            expire_seconds: None,
        }
    }

    fn misuse(mode: &str) -> Result<(), StoreError> {
        match mode {
            "flood" => store::set(
                &(0..12_000)
                    .map(|i| SetEntry {
                        key: format!("flood:{i}").into_bytes(),
                        value: b"x".to_vec(),
                        expire_seconds: None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "big" => store::set(&[SetEntry {
                key: b"big".to_vec(),
                value: vec![b'x'; 100 << 10],
                expire_seconds: None,
            }]),
            "not-counter" => {
                store::set(&[SetEntry {
                    key: b"text".to_vec(),
                    value: b"abc".to_vec(),
                    expire_seconds: None,
                }])?;
                store::increment(&[inc("text")]).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    impl Engine for Tally {
        const NAME: &'static str = "tally";
        const VENDOR: &'static str = "cordon tests";
        const VERSION: &'static str = "1";

        fn init(settings: &Settings) -> Result<Self, String> {
            Ok(Self {
                mode: settings.get("mode").cloned().unwrap_or_default(),
            })
        }

        fn definitions_version(&self) -> String {
            String::new()
        }

        fn scan(&self, envelope: &Envelope, message: &[u8]) -> Verdict {
            let mut rules = Vec::new();
            if let Err(e) = misuse(&self.mode) {
                rules.push(format!("store:{}", error_name(e)));
                return Verdict {
                    rules,
                    ..Verdict::clean()
                };
            }
            let from = format!("from:{}", envelope.mail_from);
            match store::increment(&[inc("scans"), inc(&from)]) {
                Ok(n) => {
                    rules.push(format!("scans={}", n[0]));
                    rules.push(format!("from={}", n[1]));
                }
                Err(e) => rules.push(format!("store:{}", error_name(e))),
            }
            let keys = [
                b"learned:spam".to_vec(),
                b"learned:ham".to_vec(),
                digest(message).into_bytes(),
            ];
            let mut threats = Vec::new();
            match store::get(&keys) {
                Ok(values) => {
                    let text = |v: &Option<Vec<u8>>| {
                        v.as_ref()
                            .map_or("0".to_string(), |v| String::from_utf8_lossy(v).into_owned())
                    };
                    rules.push(format!("learned.spam={}", text(&values[0])));
                    rules.push(format!("learned.ham={}", text(&values[1])));
                    if values[2].as_deref() == Some(b"spam") {
                        threats.push(Threat::new("Tally.LearnedSpam", ThreatKind::Spam));
                    }
                }
                Err(e) => rules.push(format!("store:{}", error_name(e))),
            }
            Verdict {
                rules,
                ..Verdict::detected(threats)
            }
        }

        fn learn(
            &self,
            _envelope: &Envelope,
            message: &[u8],
            class: LearnClass,
            _reference: Option<&str>,
        ) -> Result<LearnOutcome, String> {
            let key = digest(message).into_bytes();
            let class = class_name(class);
            let err = |e: StoreError| format!("store: {}", error_name(e));
            let known = store::get(std::slice::from_ref(&key)).map_err(err)?;
            if known[0].as_deref() == Some(class.as_bytes()) {
                return Ok(LearnOutcome::AlreadyLearned);
            }
            store::set(&[SetEntry {
                key,
                value: class.as_bytes().to_vec(),
                expire_seconds: None,
            }])
            .map_err(err)?;
            store::increment(&[inc(&format!("learned:{class}"))]).map_err(err)?;
            Ok(LearnOutcome::Learned)
        }
    }

    export_engine!(Tally);
}
