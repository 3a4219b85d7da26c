//! Logical expressions of .ldb signatures: `&`, `|`, parentheses, and match
//! counts (`0=2`, `0>1`, `0<3`, `(0|1)>2,2`).
//!
//! A count applies to a subsignature or a group: its value is the number of
//! matches (summed over the group), and the optional second number is how
//! many distinct subsignatures of the group must have matched. `&` binds
//! tighter than `|`.

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Subsignature N matched at least once.
    Sub(usize),
    /// All of these.
    And(Vec<Expr>),
    /// Any of these.
    Or(Vec<Expr>),
    /// A count condition on a subsignature or group.
    Count {
        /// The subsignature or group counted.
        of: Box<Expr>,
        /// `=`, `>` or `<`.
        op: u8,
        /// The number of matches compared against.
        n: u64,
        /// Distinct subsignatures that must have matched.
        distinct: Option<u64>,
    },
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn number(&mut self) -> Result<u64, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("expected a number at column {}", start + 1))
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(b'|') {
            self.i += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Or(vec![]))
        } else {
            Expr::Or(items)
        })
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.factor()?];
        while self.peek() == Some(b'&') {
            self.i += 1;
            items.push(self.factor()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::And(vec![]))
        } else {
            Expr::And(items)
        })
    }
    fn factor(&mut self) -> Result<Expr, String> {
        let primary = match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let e = self.or()?;
                if self.peek() != Some(b')') {
                    return Err(format!("expected ')' at column {}", self.i + 1));
                }
                self.i += 1;
                e
            }
            Some(c) if c.is_ascii_digit() => Expr::Sub(self.number()? as usize),
            _ => {
                return Err(format!(
                    "unexpected {:?} at column {}",
                    self.peek().map(char::from),
                    self.i + 1
                ));
            }
        };
        match self.peek() {
            Some(op @ (b'=' | b'>' | b'<')) => {
                self.i += 1;
                let n = self.number()?;
                let distinct = if self.peek() == Some(b',') {
                    self.i += 1;
                    Some(self.number()?)
                } else {
                    None
                };
                Ok(Expr::Count {
                    of: Box::new(primary),
                    op,
                    n,
                    distinct,
                })
            }
            _ => Ok(primary),
        }
    }
}

impl Expr {
    /// Parses an expression over `subs` subsignatures.
    pub fn parse(src: &str, subs: usize) -> Result<Expr, String> {
        let mut p = Parser {
            s: src.as_bytes(),
            i: 0,
        };
        let e = p.or()?;
        if p.i != src.len() {
            return Err(format!(
                "unexpected {:?} at column {}",
                src[p.i..].chars().next(),
                p.i + 1
            ));
        }
        let mut bad = None;
        e.visit(&mut |n| {
            if n >= subs {
                bad = Some(n);
            }
        });
        if let Some(n) = bad {
            return Err(format!(
                "expression uses subsignature {n}, but there are {subs}"
            ));
        }
        Ok(e)
    }

    fn visit(&self, f: &mut impl FnMut(usize)) {
        match self {
            Expr::Sub(n) => f(*n),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.visit(f)),
            Expr::Count { of, .. } => of.visit(f),
        }
    }

    /// Evaluates with `counts[i]` matches of subsignature i.
    pub fn eval(&self, counts: &[u64]) -> bool {
        match self {
            Expr::Sub(n) => counts.get(*n).copied().unwrap_or(0) > 0,
            Expr::And(v) => v.iter().all(|e| e.eval(counts)),
            Expr::Or(v) => v.iter().any(|e| e.eval(counts)),
            Expr::Count {
                of,
                op,
                n,
                distinct,
            } => {
                let (mut total, mut seen) = (0u64, 0u64);
                of.visit(&mut |i| {
                    let c = counts.get(i).copied().unwrap_or(0);
                    total += c;
                    seen += u64::from(c > 0);
                });
                let ok = match op {
                    b'=' => total == *n,
                    b'>' => total > *n,
                    _ => total < *n,
                };
                ok && distinct.is_none_or(|d| seen >= d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let rows: &[(&str, &[u64], bool)] = &[
            ("0&1", &[1, 1], true),
            ("0&1", &[1, 0], false),
            ("0|1", &[0, 1], true),
            ("0|1&2", &[1, 0, 0], true),
            ("(0|1)&2", &[1, 0, 0], false),
            ("0=2", &[2], true),
            ("0=2", &[3], false),
            ("0>1", &[2], true),
            ("0<2", &[0], true),
            ("0<2", &[2], false),
            ("(0|1|2)>2", &[1, 1, 1], true),
            ("(0|1|2)>2,3", &[3, 0, 0], false),
            ("(0|1|2)>2,2", &[2, 1, 0], true),
        ];
        for (src, counts, want) in rows {
            let e = Expr::parse(src, counts.len()).unwrap();
            assert_eq!(e.eval(counts), *want, "{src} {counts:?}");
        }
    }

    #[test]
    fn errors() {
        assert!(
            Expr::parse("0&3", 2)
                .unwrap_err()
                .contains("subsignature 3")
        );
        assert!(Expr::parse("(0&1", 2).unwrap_err().contains("expected ')'"));
        assert!(Expr::parse("0&&1", 2).is_err());
    }
}
