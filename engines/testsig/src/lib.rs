//! testsig: cordon's reference engine and the template for vendors.
//!
//! It detects the two industry test strings anywhere in the raw message and
//! in every decoded MIME part (so a base64 attachment is found too):
//! EICAR (the anti-virus test file) as the virus `Eicar-Test-Signature`, and
//! GTUBE (the anti-spam test string) as spam with a score of 1000, the way
//! SpamAssassin scores it. When GTUBE is found, recipients in the opt-in
//! profile `spam-drop` get a `drop` verdict and those in `spam-alternate`
//! an `alternate` verdict (to the setting `alternate_location`), the way
//! Brightmail's per-recipient verdicts work. The matching lives in [`matcher`], plain Rust that
//! the host's benchmark also links natively as its baseline; the component
//! glue is the `export_engine!` call at the bottom, compiled only for wasm.

pub mod matcher {
    //! The detection code, independent of cordon's bindings.

    /// The EICAR test file, as published by EICAR.
    pub const EICAR: &[u8] =
        br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    /// The GTUBE test string, as published by SpamAssassin.
    pub const GTUBE: &[u8] =
        b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

    /// What was found.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Found {
        /// EICAR occurs.
        pub eicar: bool,
        /// GTUBE occurs.
        pub gtube: bool,
    }

    /// The two searchers, built once (in the engine, during `init`, so
    /// that every scan starts with them in its snapshot).
    static FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| {
            [
                memchr::memmem::Finder::new(EICAR),
                memchr::memmem::Finder::new(GTUBE),
            ]
        });

    /// Builds the searchers now rather than at the first search.
    pub fn prepare() {
        std::sync::LazyLock::force(&FINDERS);
    }

    /// Searches `data` for both strings.
    pub fn find(data: &[u8]) -> Found {
        let [eicar, gtube] = &*FINDERS;
        Found {
            eicar: eicar.find(data).is_some(),
            gtube: gtube.find(data).is_some(),
        }
    }
}

#[cfg(target_family = "wasm")]
mod component {
    use cordon_engine_sdk::{
        Engine, Envelope, Level, PartInfo, RecipientAction, RecipientVerdict, Settings, Threat,
        ThreatKind, Verdict, export_engine, log,
    };

    use crate::matcher;

    /// Threat name for EICAR.
    const EICAR_NAME: &str = "Eicar-Test-Signature";
    /// Threat name and rule for GTUBE.
    const GTUBE_NAME: &str = "GTUBE";

    /// Profile whose members do not get spam.
    const PROFILE_DROP: &str = "spam-drop";
    /// Profile whose members get spam at the alternate location.
    const PROFILE_ALTERNATE: &str = "spam-alternate";

    struct Testsig {
        definitions_version: String,
        alternate_location: String,
    }

    impl Testsig {
        fn verdict(&self, envelope: &Envelope, data: &[u8], part: String) -> Verdict {
            let found = matcher::find(data);
            let mut threats = Vec::new();
            if found.eicar {
                threats.push(Threat {
                    name: EICAR_NAME.into(),
                    kind: ThreatKind::Virus,
                    part: part.clone(),
                });
            }
            if found.gtube {
                threats.push(Threat {
                    name: GTUBE_NAME.into(),
                    kind: ThreatKind::Spam,
                    part,
                });
            }
            let mut v = Verdict::detected(threats);
            if found.gtube {
                v.spam_score = Some(1000.0);
                v.rules.push(GTUBE_NAME.into());
                for r in &envelope.recipients {
                    let action = if r.profiles.iter().any(|p| p == PROFILE_DROP) {
                        RecipientAction::Drop
                    } else if r.profiles.iter().any(|p| p == PROFILE_ALTERNATE) {
                        RecipientAction::Alternate(self.alternate_location.clone())
                    } else {
                        continue;
                    };
                    v.recipients.push(RecipientVerdict {
                        address: r.address.clone(),
                        action,
                        rules: vec![GTUBE_NAME.into()],
                    });
                }
            } else {
                v.spam_score = Some(0.0);
            }
            v
        }
    }

    impl Engine for Testsig {
        const NAME: &'static str = "testsig";
        const VENDOR: &'static str = "cordon";
        const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        const WANTS_PARTS: bool = true;

        fn init(settings: &Settings) -> Result<Self, String> {
            matcher::prepare();
            let mut definitions_version = "builtin".to_string();
            let mut alternate_location = "spam".to_string();
            for (key, value) in settings {
                match key.as_str() {
                    "definitions_version" => definitions_version = value.clone(),
                    "alternate_location" => alternate_location = value.clone(),
                    other => {
                        return Err(format!(
                            "unknown setting `{other}` (testsig knows: definitions_version, \
                             alternate_location)"
                        ));
                    }
                }
            }
            log(
                Level::Debug,
                &format!("testsig ready, definitions {definitions_version}"),
            );
            Ok(Testsig {
                definitions_version,
                alternate_location,
            })
        }

        fn definitions_version(&self) -> String {
            self.definitions_version.clone()
        }

        fn scan(&self, envelope: &Envelope, message: &[u8]) -> Verdict {
            self.verdict(envelope, message, String::new())
        }

        fn scan_part(&self, envelope: &Envelope, part: &PartInfo, content: &[u8]) -> Verdict {
            let location = match &part.file_name {
                Some(f) => format!("part {} ({f})", part.index),
                None => format!("part {}", part.index),
            };
            self.verdict(envelope, content, location)
        }
    }

    export_engine!(Testsig);
}

#[cfg(test)]
mod tests {
    use super::matcher::*;

    #[test]
    fn finds_each_string_anywhere() {
        let mut msg = b"Subject: x\r\n\r\nhello ".to_vec();
        assert_eq!(find(&msg), Found::default());
        msg.extend_from_slice(EICAR);
        assert!(find(&msg).eicar && !find(&msg).gtube);
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(GTUBE);
        assert_eq!(
            find(&msg),
            Found {
                eicar: true,
                gtube: true
            }
        );
        // A string cut short is not a match.
        assert!(!find(&EICAR[..EICAR.len() - 1]).eicar);
    }
}
