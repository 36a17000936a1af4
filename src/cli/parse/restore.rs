//! `-R`: ipvsadm-save lines read back as one all-or-nothing batch.

use super::{parse_with, Command, Invocation, ParseError};
use crate::cli::services::PortNames;
use crate::model::Request;

/// Splits one `-R` input line like ipvsadm's `config_stream_read`: whitespace-separated words,
/// everything from `#` on ignored, and a leading program name (`ipvsadm`, `xvsadm`) dropped.
pub fn restore_words(line: &str) -> Vec<&str> {
    let line = line.split('#').next().unwrap_or("");
    line.split_whitespace()
        .filter(|w| *w != "ipvsadm" && *w != "xvsadm")
        .collect()
}

/// Parses `-R` input (ipvsadm-save lines) into the requests of one all-or-nothing batch.
/// Blank and comment lines are skipped. Errors name the offending line.
pub fn parse_restore(input: &str, names: &PortNames) -> Result<Vec<Request>, ParseError> {
    let mut reqs = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let words = restore_words(line);
        if words.is_empty() {
            continue;
        }
        let at = |e: ParseError| ParseError {
            kind: e.kind,
            message: format!("line {}: {}", n + 1, e.message),
        };
        match parse_with(&words, names).map_err(at)? {
            Invocation {
                command: Command::Change(req),
                socket: None,
            } => reqs.push(req),
            _ => {
                return Err(at(ParseError::invalid(
                    "only configuration commands (-A -E -D -C -a -e -d -Z --set) can be restored",
                )))
            }
        }
    }
    Ok(reqs)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::model::Timeouts;

    #[test]
    fn restore_lines() {
        let input = "# saved by ipvsadm\n\
                     -A -t 10.0.0.88:80 -s wrr -p 600\n\
                     \n\
                     ipvsadm -a -t 10.0.0.88:80 -r 10.0.0.9:80 -g -w 2   # web1\n\
                     --set 0 0 60\n";
        let reqs = parse_restore(input, &names()).unwrap();
        assert_eq!(reqs.len(), 3);
        assert!(
            matches!(&reqs[0], Request::AddService { opts, .. } if opts.persistent == Some(600))
        );
        assert!(matches!(&reqs[1], Request::AddDest { dest, .. } if dest.weight == 2));
        assert_eq!(
            reqs[2],
            Request::SetTimeouts(Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 60
            })
        );
        let e =
            parse_restore("-C\n-a -t 10.0.0.88:80 -r 10.0.0.9 -w 70000\n", &names()).unwrap_err();
        assert_eq!(e.message, "line 2: illegal weight specified");
        assert_eq!(e.exit_code(), 2);
        let e = parse_restore("-L -n\n", &names()).unwrap_err();
        assert!(
            e.message.starts_with("line 1: only configuration commands"),
            "{e}"
        );
        let e = parse_restore("-R\n", &names()).unwrap_err();
        assert!(e.message.starts_with("line 1:"), "{e}");
        assert_eq!(parse_restore("\n# nothing\n", &names()).unwrap(), vec![]);
    }
}
