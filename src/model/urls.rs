//! Credentials in URLs. A URL can carry a secret in its user info
//! (`https://TOKEN@host/`, `https://user:password@host/`) or in a query
//! parameter (`?access_token=...`). [`credential`] says what in a URL is
//! one, for the places that refuse them (spec validation, `--git`);
//! [`redact`] hides them in any text that may hold a URL, for every place a
//! URL is shown or kept (errors, plans, the state, `/healthz`), so that a
//! URL let through by mistake still does not leak.
//!
//! URLs are found by their `://`: `git@host:org/repo` and plain paths hold
//! no credential (an SSH login name is not a secret), and there is nothing
//! to hide in them.

use std::ops::Range;

/// Query parameters that carry credentials, compared lowercased with `-`
/// read as `_` (`API-Key` is `api_key`). Besides the usual token names,
/// `password` and `secret` name a credential as plainly as `token` does.
pub const SECRET_PARAMS: &[&str] = &[
    "token",
    "key",
    "apikey",
    "api_key",
    "access_token",
    "password",
    "secret",
];

/// What stands in for a hidden credential, as in [`super::text::untrusted`].
const REDACTED: &str = "(sensitive)";

/// Whether a query parameter's name marks its value as a credential.
pub fn is_secret_param(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let folded = decoded.to_ascii_lowercase().replace('-', "_");
    SECRET_PARAMS.contains(&folded.as_str())
}

/// The pieces of one URL in a text, as byte ranges of that text.
struct Found {
    scheme: Range<usize>,
    /// Between `://` and the last `@` of the authority, when there is an `@`.
    userinfo: Option<Range<usize>>,
    /// After `?`, up to `#` or the end of the URL.
    query: Option<Range<usize>>,
    end: usize,
}

/// What ends a URL inside running text.
fn ends_url(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// The URL whose `://` starts at byte `sep` of `text`, if a scheme precedes it.
fn url_at(text: &str, sep: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let mut start = sep;
    while start > 0
        && (bytes[start - 1].is_ascii_alphanumeric()
            || matches!(bytes[start - 1], b'+' | b'-' | b'.'))
    {
        start -= 1;
    }
    // A scheme starts with a letter; skip anything before it (`(https://`).
    while start < sep && !bytes[start].is_ascii_alphabetic() {
        start += 1;
    }
    if start == sep {
        return None;
    }
    let after = sep + 3;
    let end = (after..bytes.len())
        .find(|&i| ends_url(bytes[i]))
        .unwrap_or(bytes.len());
    let authority_end = (after..end)
        .find(|&i| matches!(bytes[i], b'/' | b'?' | b'#'))
        .unwrap_or(end);
    let userinfo = text[after..authority_end]
        .rfind('@')
        .map(|at| after..after + at);
    let query = text[authority_end..end].find('?').map(|q| {
        let q = authority_end + q + 1;
        let fragment = text[q..end].find('#').map_or(end, |f| q + f);
        q..fragment
    });
    Some(Found {
        scheme: start..sep,
        userinfo,
        query,
        end,
    })
}

/// Schemes whose user name is who to log in as, not a credential: an SSH
/// key or agent does the authenticating.
fn user_is_a_login(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "ssh" | "git+ssh" | "ssh+git"
    )
}

/// The value ranges of `query`'s secret parameters.
fn secret_values(text: &str, query: Range<usize>) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let mut at = query.start;
    for pair in text[query.clone()].split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && !value.is_empty()
            && is_secret_param(name)
        {
            let value_start = at + name.len() + 1;
            out.push((value_start..value_start + value.len(), name.to_owned()));
        }
        at += pair.len() + 1;
    }
    out
}

/// `text` with the credentials of every URL in it replaced by
/// `(sensitive)`: the user info (for SSH, only a password: the user name is
/// a login), and the values of the query parameters of [`SECRET_PARAMS`].
/// Everything else is left exactly as it was.
pub fn redact(text: &str) -> String {
    let mut cuts: Vec<Range<usize>> = Vec::new();
    let mut search = 0;
    while let Some(rel) = text[search..].find("://") {
        let sep = search + rel;
        let Some(found) = url_at(text, sep) else {
            search = sep + 3;
            continue;
        };
        if let Some(info) = found.userinfo.filter(|r| !r.is_empty()) {
            if user_is_a_login(&text[found.scheme.clone()]) {
                if let Some(colon) = text[info.clone()].find(':') {
                    cuts.push(info.start + colon + 1..info.end);
                }
            } else {
                cuts.push(info);
            }
        }
        if let Some(query) = found.query {
            cuts.extend(secret_values(text, query).into_iter().map(|(r, _)| r));
        }
        search = found.end.max(sep + 3);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for cut in cuts {
        out.push_str(&text[copied..cut.start]);
        out.push_str(REDACTED);
        copied = cut.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// What in `url` is a credential, in words that do not repeat it: a
/// password, a user name (where services put tokens; not for SSH, where it
/// is the login), or a secret query parameter. `None` when there is none,
/// and for URLs without `://` (`git@host:org/repo`, paths).
pub fn credential(url: &str) -> Option<String> {
    let sep = url.find("://")?;
    let found = url_at(url, sep)?;
    if let Some(info) = found.userinfo.filter(|r| !r.is_empty()) {
        if url[info.clone()].contains(':') {
            return Some("a password before `@`".into());
        }
        if !user_is_a_login(&url[found.scheme.clone()]) {
            return Some("a user name before `@`, where services put tokens".into());
        }
    }
    let query = found.query?;
    secret_values(url, query)
        .into_iter()
        .next()
        .map(|(_, name)| format!("the query parameter `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_parameters_are_hidden_and_nothing_else() {
        for (text, shown) in [
            (
                "https://ghp_abc123@github.com/org/fleet.git",
                "https://(sensitive)@github.com/org/fleet.git",
            ),
            (
                "https://bot:s3cret@h/r.git#main:fleet",
                "https://(sensitive)@h/r.git#main:fleet",
            ),
            (
                "fetch failed: http://tok@127.0.0.1:1/repo.git (ref HEAD)",
                "fetch failed: http://(sensitive)@127.0.0.1:1/repo.git (ref HEAD)",
            ),
            (
                "https://h/mcp?team=a&api-key=k3y&access_token=t0k#x",
                "https://h/mcp?team=a&api-key=(sensitive)&access_token=(sensitive)#x",
            ),
            (
                "https://h/mcp?API%5FKEY=k3y",
                "https://h/mcp?API%5FKEY=(sensitive)",
            ),
            (
                "a https://u@a/ and 'http://v@b/' and <ftp://w:x@c>",
                "a https://(sensitive)@a/ and 'http://(sensitive)@b/' and <ftp://(sensitive)@c>",
            ),
            // An SSH user name is who to log in as; only a password goes.
            ("ssh://git@h/org/r.git", "ssh://git@h/org/r.git"),
            (
                "ssh://git:pw@h/org/r.git",
                "ssh://git:(sensitive)@h/org/r.git",
            ),
            (
                "git@github.com:org/fleet.git",
                "git@github.com:org/fleet.git",
            ),
            // An `@` in the path is not user info.
            ("https://h/org/r@v1", "https://h/org/r@v1"),
            ("https://h/r?token=", "https://h/r?token="),
            ("/srv/fleet.git", "/srv/fleet.git"),
            ("://nothing@here", "://nothing@here"),
            ("", ""),
        ] {
            assert_eq!(redact(text), shown, "{text}");
        }
    }

    #[test]
    fn credentials_are_named_without_repeating_them() {
        for (url, what) in [
            (
                "https://ghp_abc@h/r.git",
                Some("a user name before `@`, where services put tokens"),
            ),
            ("https://u:p@h/r.git", Some("a password before `@`")),
            ("ssh://git:p@h/r.git", Some("a password before `@`")),
            (
                "https://h/r.git?Token=x",
                Some("the query parameter `Token`"),
            ),
            ("ssh://git@h/r.git", None),
            ("git@h:org/r.git", None),
            ("https://h/r.git", None),
            ("file:///srv/r.git", None),
            ("/srv/r.git", None),
        ] {
            assert_eq!(credential(url).as_deref(), what, "{url}");
        }
    }
}
