//! Per-recipient verdicts: each envelope recipient's most severe verdict
//! across engines (drop > alternate > deliver) and the rules fired for it,
//! then the recipient edits and alternate headers they call for.

use std::collections::{HashMap, HashSet};

use super::decision::{Decision, HEADER_VALUE_BYTES, RecipientEdit};
use super::headers::AlternateMode;
use super::skip::bare_address;
use crate::bindings::{Envelope, RecipientAction, RecipientVerdict};
use crate::text::{bounded_list, printable};

/// Notes about recipient verdicts for non-recipients kept per message; the
/// rest are counted in one more note.
const MAX_IGNORED_NOTES: usize = 10;

/// Per-recipient severity: drop > alternate > deliver.
fn recipient_rank(a: &RecipientAction) -> u8 {
    match a {
        RecipientAction::Deliver => 0,
        RecipientAction::Alternate(_) => 1,
        RecipientAction::Drop => 2,
    }
}

/// An alternate location usable as a recipient address.
fn valid_location(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 254
        && l.contains('@')
        && l.chars()
            .all(|c| c.is_ascii_graphic() && !"<>()[],;:\"\\".contains(c))
}

/// Every engine's recipient verdicts for one message, merged. Lookups are
/// hashed: an engine may send a thousand recipient verdicts with hundreds
/// of rules each, and none of this may grow faster than what it reads.
pub(super) struct Tally {
    /// Per envelope recipient: the most severe verdict and its rules (in
    /// order, each once).
    per_rcpt: Vec<(RecipientAction, Vec<String>)>,
    rules_seen: Vec<HashSet<String>>,
    index: HashMap<String, usize>,
    ignored: usize,
}

impl Tally {
    /// An empty tally for `envelope`'s recipients.
    pub(super) fn new(envelope: &Envelope) -> Self {
        let n = envelope.recipients.len();
        let mut index = HashMap::with_capacity(n);
        for (i, e) in envelope.recipients.iter().enumerate() {
            index
                .entry(bare_address(&e.address).to_ascii_lowercase())
                .or_insert(i);
        }
        Self {
            per_rcpt: vec![(RecipientAction::Deliver, Vec::new()); n],
            rules_seen: vec![HashSet::new(); n],
            index,
            ignored: 0,
        }
    }

    /// Adds `engine`'s verdict for one recipient; a verdict for an address
    /// that is not a recipient is noted in `d.ignored` (the first few).
    pub(super) fn add(&mut self, engine: &str, rv: &RecipientVerdict, d: &mut Decision) {
        let want = bare_address(&rv.address).to_ascii_lowercase();
        match self.index.get(&want).copied() {
            Some(i) => {
                if recipient_rank(&rv.action) > recipient_rank(&self.per_rcpt[i].0) {
                    self.per_rcpt[i].0 = rv.action.clone();
                }
                for rule in &rv.rules {
                    let rule = format!("{engine}:{rule}");
                    if self.rules_seen[i].insert(rule.clone()) {
                        self.per_rcpt[i].1.push(rule);
                    }
                }
            }
            None if self.ignored < MAX_IGNORED_NOTES => {
                self.ignored += 1;
                d.ignored.push(format!(
                    "{engine}: verdict for {:?}, not a recipient of this message",
                    printable(&rv.address)
                ));
            }
            None => self.ignored += 1,
        }
    }

    /// Turns the tally into recipient edits and rules on `d`; returns the
    /// alternates to name in headers (address, location), or `None` when
    /// every recipient was dropped (the message is then discarded).
    pub(super) fn apply(
        self,
        envelope: &Envelope,
        mode: AlternateMode,
        d: &mut Decision,
    ) -> Option<Vec<(String, String)>> {
        if self.ignored > MAX_IGNORED_NOTES {
            d.ignored.push(format!(
                "{} more recipient verdicts for addresses that are not recipients",
                self.ignored - MAX_IGNORED_NOTES
            ));
        }
        let mut rules_seen: HashSet<String> = d.rules.iter().cloned().collect();
        let mut alternates = Vec::new();
        let mut kept = 0;
        for (rcpt, (action, rules)) in envelope.recipients.iter().zip(self.per_rcpt) {
            match action {
                RecipientAction::Drop => {
                    d.recipients
                        .push(RecipientEdit::Delete(rcpt.address.clone()));
                    continue;
                }
                RecipientAction::Alternate(location) => match mode {
                    AlternateMode::Replace if valid_location(&location) => {
                        d.recipients
                            .push(RecipientEdit::Delete(rcpt.address.clone()));
                        d.recipients
                            .push(RecipientEdit::Add(format!("<{location}>")));
                    }
                    AlternateMode::Replace => d.ignored.push(format!(
                        "alternate location {:?} for {} is not an address",
                        printable(&location),
                        rcpt.address
                    )),
                    AlternateMode::Header => alternates.push((
                        bare_address(&rcpt.address).to_string(),
                        bounded_list([location.as_str()], HEADER_VALUE_BYTES / 2),
                    )),
                },
                RecipientAction::Deliver => {}
            }
            kept += 1;
            for rule in rules {
                if rules_seen.insert(rule.clone()) {
                    d.rules.push(rule);
                }
            }
        }
        if !envelope.recipients.is_empty() && kept == 0 {
            return None;
        }
        Some(alternates)
    }
}
