//! Assembling the guest command line: the user's (or the default) first,
//! then what the VMM manages, without overriding anything the user set.

/// The key of a command-line word: `key` in `key=value`, or the word.
fn key_of(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// Whether `cmdline` sets `key` (as `key` or `key=...`) before any `--`.
pub fn has_key(cmdline: &str, key: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .any(|w| key_of(w) == key)
}

/// Appends `key[=value]` unless the command line already sets `key`.
/// Parameters go before a `--` (after which words are init's arguments).
/// Returns whether it was added.
pub fn add_param(cmdline: &mut String, key: &str, value: Option<&str>) -> bool {
    if has_key(cmdline, key) {
        return false;
    }
    let param = match value {
        Some(v) => format!("{key}={v}"),
        None => key.to_string(),
    };
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let (kernel, init): (Vec<&str>, Vec<&str>) = match words.iter().position(|w| *w == "--") {
        Some(i) => (words[..i].to_vec(), words[i..].to_vec()),
        None => (words, vec![]),
    };
    let mut out: Vec<&str> = kernel;
    out.push(&param);
    out.extend(init);
    *cmdline = out.join(" ");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_params_the_user_did_not_set() {
        let mut c = String::from("console=ttyS0 lpj=1");
        assert!(add_param(&mut c, "tsc", Some("reliable")));
        assert!(!add_param(&mut c, "lpj", Some("5000000")));
        assert!(add_param(&mut c, "no_timer_check", None));
        assert!(!add_param(&mut c, "no_timer_check", None));
        assert_eq!(c, "console=ttyS0 lpj=1 tsc=reliable no_timer_check");
    }

    #[test]
    fn keeps_init_arguments_last() {
        let mut c = String::from("console=ttyS0 -- init-arg lpj=3");
        assert!(add_param(&mut c, "lpj", Some("5")));
        assert_eq!(c, "console=ttyS0 lpj=5 -- init-arg lpj=3");
    }

    #[test]
    fn empty_command_line() {
        let mut c = String::new();
        add_param(&mut c, "a", Some("b"));
        assert_eq!(c, "a=b");
        assert!(has_key("x=1 y", "y"));
        assert!(!has_key("xy=1", "x"));
    }
}
