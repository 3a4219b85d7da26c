//! Signature databases for the benchmarks: a few signatures that match
//! real corpus content, plus as many generated ones as asked for. Included
//! by the benchmarks with `#[path]`.

#![allow(dead_code)]

use std::path::Path;

/// Lower-case hex.
pub fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

/// A xorshift generator: the same database every run.
pub struct Rng(pub u64);
impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Signatures that match real content of the corpus, so that every
/// scanner has detections to agree on.
pub fn real_sigs() -> String {
    [
        format!("Bench.Html:0:*:{}", hex(b"<html>")),
        format!("Bench.Unsubscribe:0:*:{}", hex(b"unsubscribe")),
        format!("Bench.Money:0:*:{}{{-20}}{}", hex(b"money"), hex(b"back")),
    ]
    .join("\n")
        + "\n"
}

/// Writes `real.ndb` and `generated` more signatures (nine in ten body
/// signatures, one in ten of those with a wildcard; the rest MD5) into `dir`.
pub fn write_db(dir: &Path, generated: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("real.ndb"), real_sigs()).unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let hashes = generated / 10;
    let bodies = generated - hashes;
    let mut ndb = String::with_capacity(bodies * 60);
    for i in 0..bodies {
        let a = rng.bytes(8);
        let b = rng.bytes(8);
        if i % 10 == 0 {
            ndb.push_str(&format!("Bench.Gen.{i}:0:*:{}??{}\n", hex(&a), hex(&b)));
        } else {
            ndb.push_str(&format!("Bench.Gen.{i}:0:*:{}{}\n", hex(&a), hex(&b)));
        }
    }
    std::fs::write(dir.join("generated.ndb"), ndb).unwrap();
    let mut hdb = String::with_capacity(hashes * 60);
    for i in 0..hashes {
        hdb.push_str(&format!(
            "{}:{}:Bench.Hash.{i}\n",
            hex(&rng.bytes(16)),
            1000 + rng.next() % 100_000
        ));
    }
    std::fs::write(dir.join("generated.hdb"), hdb).unwrap();
}
