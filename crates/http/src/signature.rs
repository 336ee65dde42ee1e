//! A signature detector of the libinjection kind: SQL injection by tokenising a value as SQL
//! and matching the token fingerprint against libinjection's list of known injection
//! fingerprints, XSS by tokenising it as HTML and looking for script-bearing tags and attributes.
//! It is what a WAF's SQLi/XSS rules catch, with no training and no examples: the baseline a
//! few-shot detector of web-request families has to beat (`metaids evaluate --dataset
//! http-requests` reports it as `libinjection (signatures)`).
//!
//! The implementation is `libinjectionrs`, a Rust port of libinjection (BSD-3-Clause) whose
//! author reports that it passes the C library's test files and survived differential fuzzing
//! against it. Our own differential run on the payload file (README) found it equal to the C
//! library on every benign and held-out payload but silent on 2.1% of the SQL-injection payloads
//! the C code flags (never the reverse). A panic inside it (the port's README does not rule out a slice index out of
//! bounds) is caught and reported as [`Signature::failed`], never propagated.

/// What the signatures say of one value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signature {
    /// libinjection's SQL-injection fingerprint matched.
    pub sqli: bool,
    /// libinjection's XSS detector fired.
    pub xss: bool,
    /// The detector panicked on this value (nothing flagged).
    pub failed: bool,
}

impl Signature {
    /// Whether either signature matched.
    pub fn flagged(&self) -> bool {
        self.sqli || self.xss
    }
}

/// Runs both signatures on `value` (the bytes as a request carries them after decoding).
pub fn libinjection(value: &[u8]) -> Signature {
    std::panic::catch_unwind(|| Signature {
        sqli: libinjectionrs::detect_sqli(value).is_injection(),
        xss: libinjectionrs::detect_xss(value).is_injection(),
        failed: false,
    })
    .unwrap_or(Signature {
        failed: true,
        ..Signature::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_injections_match_and_ordinary_values_do_not() {
        for sqli in ["1' OR '1'='1", "1 union select null,null--", "admin' --"] {
            let s = libinjection(sqli.as_bytes());
            assert!(s.sqli && !s.failed, "{sqli}");
        }
        for xss in ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"] {
            let s = libinjection(xss.as_bytes());
            assert!(s.xss && !s.failed, "{xss}");
        }
        for benign in ["Madrid", "hello world", "12345", "jose@example.com", ""] {
            assert!(!libinjection(benign.as_bytes()).flagged(), "{benign}");
        }
        // Template injection is not what these signatures look for.
        assert!(!libinjection(b"{{7*7}}").flagged());
    }

    #[test]
    fn the_port_misses_some_injections_the_c_library_catches() {
        // A differential run against the C library (client9/libinjection e86ff40 and
        // libinjection/libinjection 85e252a, README "libinjection (signatures)") on the payload
        // file found the port silent on 251 SQL-injection payloads both C versions flag, never
        // the reverse. Two of them, pinned so an upgrade that fixes the port shows here (then the
        // README's figures of the difference need the check run again).
        for missed in [
            "1' in boolean mode);select count(*) from generate_series(1,5000000)#",
            "1' in boolean mode);select count(*) from sysibm.systables as t1,sysibm.systables as t2,sysibm.systables as t3#",
        ] {
            assert!(!libinjection(missed.as_bytes()).sqli, "{missed}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let s = libinjection(&bytes);
            proptest::prop_assert!(!s.failed, "the detector panicked on {:?}", bytes);
        }
    }
}
