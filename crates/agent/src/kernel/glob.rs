//! Interface-name globs: `*` matches any run of characters (also none),
//! `?` exactly one; everything else matches itself. No classes, no escapes
//! (interface names cannot contain `*` or `?` anyway). Whole-name match.

/// Whether `name` matches `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` absorb one more character and retry.
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literals_match_whole_names() {
        assert!(glob_match("kube-lb0", "kube-lb0"));
        assert!(!glob_match("kube-lb0", "kube-lb01"));
        assert!(!glob_match("kube-lb0", "kube-lb"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn wildcards() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "eth0"));
        assert!(glob_match("eth*", "eth0"));
        assert!(glob_match("eth*", "eth"));
        assert!(!glob_match("eth*", "veth0"));
        assert!(glob_match("*lb*", "kube-lb0"));
        assert!(glob_match("kube-lb?", "kube-lb0"));
        assert!(!glob_match("kube-lb?", "kube-lb"));
        assert!(!glob_match("kube-lb?", "kube-lb10"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("**a", "bba"));
        assert!(glob_match("?*?", "ab"));
        assert!(!glob_match("?*?", "a"));
    }
}
