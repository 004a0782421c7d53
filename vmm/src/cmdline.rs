//! Assembling the guest command line: the user's (or the default) first,
//! then what the VMM manages, without overriding anything the user set.

/// The kernel parameter that carries `vmm run -- COMMAND` to the guest's
/// init (an environment variable for it, as every unknown KEY=VALUE is).
pub const COMMAND_PARAM: &str = "VMM_CMD";
/// The kernel parameter that asks the guest's init for a shell on the
/// console when there is no command.
pub const SHELL_PARAM: &str = "VMM_SHELL";
/// The kernel parameter that asks the guest's init to configure eth0 by
/// DHCP (`vmm run --dhcp`).
pub const DHCP_PARAM: &str = "VMM_DHCP";

/// The command's argv as the value of `COMMAND_PARAM`: the arguments'
/// bytes each followed by a NUL, in unpadded URL-safe base64 (RFC 4648
/// section 5), so that spaces, quotes, newlines and any other bytes reach
/// init as they were given, through a command line that splits on spaces.
pub fn encode_command(argv: &[std::ffi::OsString]) -> String {
    use base64::Engine;
    use std::os::unix::ffi::OsStrExt;
    let mut raw = Vec::new();
    for arg in argv {
        raw.extend_from_slice(arg.as_bytes());
        raw.push(0);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

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

/// Appends `param` before any `--` (after which words are init's
/// arguments), whatever the command line already holds.
pub fn append(cmdline: &mut String, param: &str) {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let split = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let mut out: Vec<&str> = words[..split].to_vec();
    out.push(param);
    out.extend(&words[split..]);
    *cmdline = out.join(" ");
}

/// Appends `key[=value]` unless the command line already sets `key`.
/// Returns whether it was added.
pub fn add_param(cmdline: &mut String, key: &str, value: Option<&str>) -> bool {
    if has_key(cmdline, key) {
        return false;
    }
    match value {
        Some(v) => append(cmdline, &format!("{key}={v}")),
        None => append(cmdline, key),
    }
    true
}

/// Adds `items` (comma-separated) to the list parameter `key`: appends the
/// items it lacks where the command line sets `key`, else adds `key=items`.
/// Returns the items added.
pub fn merge_list_param(cmdline: &mut String, key: &str, items: &str) -> Vec<String> {
    let mut words: Vec<String> = cmdline.split_whitespace().map(String::from).collect();
    let end = words.iter().position(|w| w == "--").unwrap_or(words.len());
    let Some(i) = words[..end].iter().position(|w| key_of(w) == key) else {
        add_param(cmdline, key, Some(items));
        return items
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    };
    let existing: Vec<String> = words[i]
        .split_once('=')
        .map_or("", |(_, v)| v)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let added: Vec<String> = items
        .split(',')
        .filter(|s| !s.is_empty() && !existing.iter().any(|e| e == s))
        .map(String::from)
        .collect();
    let all: Vec<String> = existing.into_iter().chain(added.iter().cloned()).collect();
    words[i] = format!("{key}={}", all.join(","));
    *cmdline = words.join(" ");
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_travels_as_nul_terminated_arguments_in_base64url() {
        use base64::Engine;
        let argv: Vec<std::ffi::OsString> = ["sh", "-c", "echo 'a b' \"$X\"\n", "ünï", ""]
            .iter()
            .map(Into::into)
            .collect();
        let enc = encode_command(&argv);
        // Nothing the kernel's command-line parser would split or unquote.
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&enc)
            .unwrap();
        let mut want = Vec::new();
        for a in ["sh", "-c", "echo 'a b' \"$X\"\n", "ünï", ""] {
            want.extend_from_slice(a.as_bytes());
            want.push(0);
        }
        assert_eq!(raw, want);
        // Bytes that are not UTF-8 too.
        use std::os::unix::ffi::OsStringExt;
        let odd = encode_command(&[std::ffi::OsString::from_vec(vec![0xff, 0xfe])]);
        assert_eq!(odd, "__4A");
    }

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
    fn list_params_are_merged() {
        let mut c = String::from("console=ttyS0 clearcpuid=avx,sse4_2 -- arg");
        let added = merge_list_param(&mut c, "clearcpuid", "popcnt,avx,x2apic");
        assert_eq!(added, vec!["popcnt", "x2apic"]);
        assert_eq!(
            c,
            "console=ttyS0 clearcpuid=avx,sse4_2,popcnt,x2apic -- arg"
        );
        let mut c = String::from("console=ttyS0");
        assert_eq!(merge_list_param(&mut c, "clearcpuid", "a,b").len(), 2);
        assert_eq!(c, "console=ttyS0 clearcpuid=a,b");
        let mut c = String::from("clearcpuid=");
        merge_list_param(&mut c, "clearcpuid", "a");
        assert_eq!(c, "clearcpuid=a");
    }

    #[test]
    fn append_repeats_and_keeps_init_arguments_last() {
        let mut c = String::from("console=ttyS0 -- x");
        append(&mut c, "virtio_mmio.device=4K@0xd0000000:5");
        append(&mut c, "virtio_mmio.device=4K@0xd0001000:6");
        assert_eq!(
            c,
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 -- x"
        );
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
