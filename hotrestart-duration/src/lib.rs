//! The one duration grammar of hotrestart: a whole number and a unit, `ms`, `s`, `m` or `h`
//! (`250ms`, `5s`, `2m`, `1h`), nothing around or between them. `#[hot_main(ready_timeout =
//! "5s")]` checks it at compile time and the `HOTRESTART_*_TIMEOUT` variables at run time,
//! through this one function, so the two never disagree.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Milliseconds in `text`, or a message that says what to write instead.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let expected = "expected a whole number and a unit (ms, s, m or h), like \"5s\" or \"250ms\"";
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{expected}, got \"{text}\""))?;
    let per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "\"{text}\" has no unit: write \"{text}s\" or \"{text}ms\""
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\": use ms, s, m or h, like \"{digits}s\""
            ))
        }
    };
    n.checked_mul(per_unit)
        .ok_or_else(|| format!("\"{text}\" is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn the_grammar() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5s"), Ok(5_000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert!(parse_millis("5").unwrap_err().contains("no unit"));
        assert!(parse_millis("s").is_err());
        assert!(parse_millis("5 s").is_err());
        assert!(parse_millis(" 5s").is_err());
        assert!(parse_millis("5secs").unwrap_err().contains("unknown unit"));
        assert!(parse_millis("99999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }
}
