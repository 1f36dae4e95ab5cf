//! `mcpctl export claude|vscode|cursor [SERVER...]`: the fleet of the state
//! as an MCP client's config file, every server pointing at its gateway
//! route. Also owns `--gateway-url`, where clients reach the gateway, which
//! `get servers` shows as well. The gateway's token never appears in the
//! output, not even read: each entry holds a reference that the client
//! resolves itself (`${VAR}`, `${env:VAR}`, `${input:ID}`), so the file can
//! be committed and shared.

use super::{Global, Outcome};
use miette::IntoDiagnostic;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Where `mcpctl gateway` listens unless told otherwise.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:9470";

/// The environment variable Claude Code and Cursor read the token from,
/// unless `--token-env` names another.
pub const DEFAULT_TOKEN_ENV: &str = "MCPCTL_GATEWAY_TOKEN";

/// The VS Code input that prompts for the token (and keeps it in VS Code's
/// secret storage).
pub const VSCODE_TOKEN_INPUT: &str = "mcpctl-gateway-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Code's `.mcp.json` (`mcpServers`).
    Claude,
    /// VS Code's `.vscode/mcp.json` (`servers`, with an input for the token).
    Vscode,
    /// Cursor's `.cursor/mcp.json` or `~/.cursor/mcp.json` (`mcpServers`).
    Cursor,
}

/// `--gateway-url`, for the commands that show where clients reach servers.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayUrlArgs {
    /// Where clients reach `mcpctl gateway`: http(s)://HOST[:PORT], with no
    /// path (each server is at /servers/<name>/mcp under it) and no user or
    /// password (a token in a URL leaks; it goes in a header).
    // The value is checked by `resolve`, not by clap: clap repeats a value
    // it refuses, and a refused value may be a URL with a token in it. For
    // the same reason `--help` does not show the environment's value.
    #[arg(
        long = "gateway-url",
        env = "MCPCTL_GATEWAY_URL",
        hide_env_values = true,
        default_value = DEFAULT_GATEWAY_URL,
        value_name = "URL"
    )]
    pub gateway_url: String,
}

impl GatewayUrlArgs {
    pub fn resolve(&self) -> Result<GatewayUrl, GatewayUrlError> {
        GatewayUrl::parse(&self.gateway_url)
    }
}

/// The gateway's base URL as clients reach it: scheme, host and port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    /// Without a trailing `/`.
    base: String,
    loopback: bool,
}

/// A `--gateway-url` that clients could not use, or should not be given.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("--gateway-url (MCPCTL_GATEWAY_URL) {url}: {why}")]
#[diagnostic(code(mcpctl::gateway_url), help("{help}"))]
pub struct GatewayUrlError {
    /// The URL as given, with any credential in it hidden.
    url: String,
    why: String,
    help: &'static str,
}

impl GatewayUrl {
    pub fn parse(text: &str) -> Result<GatewayUrl, GatewayUrlError> {
        let refuse = |why: String, help: &'static str| GatewayUrlError {
            url: crate::model::urls::redact(text),
            why,
            help,
        };
        const FORM: &str = "give the gateway's address, as http://127.0.0.1:9470";
        let url = url::Url::parse(text).map_err(|e| refuse(format!("not a URL ({e})"), FORM))?;
        // Before the other checks: it is the one mistake that leaks, and its
        // error must say so without repeating it.
        if let Some(what) = crate::model::urls::credential(text)
            .or_else(|| (!url.username().is_empty()).then(|| "a user name before `@`".into()))
            .or_else(|| url.password().map(|_| "a password before `@`".into()))
        {
            return Err(refuse(
                format!("it holds {what}"),
                "a token in a URL leaks into every client config made from it: give the URL without it; `export` adds the token as an Authorization header that the client fills in",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse(
                format!("the scheme is `{}`, not http or https", url.scheme()),
                FORM,
            ));
        }
        let Some(host) = url.host() else {
            return Err(refuse("it has no host".into(), FORM));
        };
        if url.path() != "/" {
            return Err(refuse(
                format!("it has a path, `{}`", url.path()),
                "give the gateway's address alone: each server is at /servers/<name>/mcp under it",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse(
                "it has a query or a fragment".into(),
                "give the gateway's address alone: each server is at /servers/<name>/mcp under it",
            ));
        }
        let loopback = match host {
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        };
        Ok(GatewayUrl {
            base: url.as_str().trim_end_matches('/').to_owned(),
            loopback,
        })
    }

    /// The URL of one server's route on the gateway.
    pub fn server(&self, name: &str) -> String {
        format!("{}/servers/{name}/mcp", self.base)
    }

    /// Reached on this machine only, where the gateway may run without a token.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The client whose config to print.
    #[arg(value_enum)]
    pub client: Client,
    /// Servers to include [default: every server in the state].
    #[arg(value_name = "SERVER")]
    pub servers: Vec<String>,
    #[command(flatten)]
    pub gateway: GatewayUrlArgs,
    /// Send the gateway's token (`Authorization: Bearer ...`, as a reference
    /// the client resolves) [default: on when MCPCTL_GATEWAY_TOKEN_FILE is
    /// set or the gateway URL is not loopback, where the gateway requires one].
    #[arg(long, overrides_with = "no_token")]
    pub token: bool,
    /// Send no Authorization header: the gateway runs without a token.
    #[arg(long, overrides_with = "token", conflicts_with = "token_env")]
    pub no_token: bool,
    /// The environment variable the client reads the token from
    /// [default: MCPCTL_GATEWAY_TOKEN; VS Code prompts for it instead].
    /// Implies --token.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
}

/// Why `export` printed nothing.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExportError {
    #[error("the state has no servers to export")]
    #[diagnostic(
        code(mcpctl::export::empty),
        help(
            "apply a source first (`mcpctl apply fleet/`), or point --state at the fleet's state file"
        )
    )]
    NoServers,
    #[error("no such server in the state: {unknown}")]
    #[diagnostic(code(mcpctl::export::unknown), help("the state has {known}"))]
    Unknown { unknown: String, known: String },
    #[error("--token-env `{0}` is not an environment variable name")]
    #[diagnostic(
        code(mcpctl::export::token_env),
        help("letters, digits and `_`, not starting with a digit, as MCPCTL_GATEWAY_TOKEN")
    )]
    TokenEnv(String),
}

/// How the client finds the token: always a reference, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    /// The gateway takes no token: no Authorization header.
    None,
    /// An environment variable of the client's.
    Env(String),
    /// A VS Code input, prompted for once.
    VscodeInput,
}

impl Args {
    /// The token reference for this client. `token_file_set` says whether
    /// MCPCTL_GATEWAY_TOKEN_FILE is set: the gateway of this environment
    /// then takes a token. The file itself is never opened.
    fn token_ref(
        &self,
        gateway: &GatewayUrl,
        token_file_set: bool,
    ) -> Result<TokenRef, ExportError> {
        if let Some(name) = &self.token_env
            && !crate::spec::is_env_name(name)
        {
            return Err(ExportError::TokenEnv(name.clone()));
        }
        let wanted = if self.no_token {
            false
        } else {
            self.token || self.token_env.is_some() || token_file_set || !gateway.is_loopback()
        };
        Ok(match (wanted, self.client, &self.token_env) {
            (false, _, _) => TokenRef::None,
            (true, Client::Vscode, None) => TokenRef::VscodeInput,
            (true, _, Some(name)) => TokenRef::Env(name.clone()),
            (true, _, None) => TokenRef::Env(DEFAULT_TOKEN_ENV.to_owned()),
        })
    }
}

/// The servers of `known` that `wanted` names (all when it names none),
/// sorted; an error naming every unknown one.
pub fn select<'a>(
    known: impl IntoIterator<Item = &'a String>,
    wanted: &[String],
) -> Result<Vec<String>, ExportError> {
    let known: BTreeSet<&String> = known.into_iter().collect();
    if known.is_empty() {
        return Err(ExportError::NoServers);
    }
    if wanted.is_empty() {
        return Ok(known.into_iter().cloned().collect());
    }
    let wanted: BTreeSet<&String> = wanted.iter().collect();
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| !known.contains(*w))
        .map(|w| w.as_str())
        .collect();
    if !unknown.is_empty() {
        // A large fleet would bury the error: name the first few.
        const SHOWN: usize = 20;
        let mut list: Vec<&str> = known.iter().take(SHOWN).map(|k| k.as_str()).collect();
        if known.len() > SHOWN {
            list.push("...");
        }
        return Err(ExportError::Unknown {
            unknown: unknown.join(", "),
            known: format!(
                "{} server{}: {}",
                known.len(),
                if known.len() == 1 { "" } else { "s" },
                list.join(", ")
            ),
        });
    }
    Ok(wanted.into_iter().cloned().collect())
}

/// One server entry of a client config.
#[derive(Debug, Serialize)]
struct Entry {
    /// Claude Code and VS Code name the transport; Cursor tells it from the
    /// server's answers.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
    url: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'static str, String>,
}

/// Claude Code's and Cursor's file.
#[derive(Debug, Serialize)]
struct McpServers {
    #[serde(rename = "mcpServers")]
    servers: BTreeMap<String, Entry>,
}

/// VS Code's file.
#[derive(Debug, Serialize)]
struct VscodeConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<VscodeInput>,
    servers: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize)]
struct VscodeInput {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'static str,
    description: &'static str,
    password: bool,
}

/// The config for `client`, pretty JSON with a final newline.
pub fn render(
    client: Client,
    gateway: &GatewayUrl,
    servers: &[String],
    token: &TokenRef,
) -> Result<String, serde_json::Error> {
    // Each client spells a reference its own way.
    let authorization = match (token, client) {
        (TokenRef::None, _) => None,
        (TokenRef::VscodeInput, _) => Some(format!("Bearer ${{input:{VSCODE_TOKEN_INPUT}}}")),
        (TokenRef::Env(name), Client::Claude) => Some(format!("Bearer ${{{name}}}")),
        (TokenRef::Env(name), Client::Vscode | Client::Cursor) => {
            Some(format!("Bearer ${{env:{name}}}"))
        }
    };
    let transport = match client {
        Client::Claude | Client::Vscode => Some("http"),
        Client::Cursor => None,
    };
    let entries: BTreeMap<String, Entry> = servers
        .iter()
        .map(|name| {
            let headers = authorization
                .iter()
                .map(|a| ("Authorization", a.clone()))
                .collect();
            let entry = Entry {
                transport,
                url: gateway.server(name),
                headers,
            };
            (name.clone(), entry)
        })
        .collect();
    let text = match client {
        Client::Claude | Client::Cursor => {
            serde_json::to_string_pretty(&McpServers { servers: entries })?
        }
        Client::Vscode => {
            let inputs = match token {
                TokenRef::VscodeInput => vec![VscodeInput {
                    kind: "promptString",
                    id: VSCODE_TOKEN_INPUT,
                    description: "mcpctl gateway token (the contents of its --token-file)",
                    password: true,
                }],
                _ => vec![],
            };
            serde_json::to_string_pretty(&VscodeConfig {
                inputs,
                servers: entries,
            })?
        }
    };
    Ok(text + "\n")
}

pub async fn run(global: &Global, args: Args) -> miette::Result<Outcome> {
    let gateway = args.gateway.resolve()?;
    let token_file_set =
        std::env::var_os("MCPCTL_GATEWAY_TOKEN_FILE").is_some_and(|v| !v.is_empty());
    let token = args.token_ref(&gateway, token_file_set)?;
    let snapshot = super::load_own_state(global).await?;
    let servers = select(snapshot.servers.keys(), &args.servers)?;
    let text = render(args.client, &gateway, &servers, &token).into_diagnostic()?;
    super::write_stdout(&text)?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_url_is_an_http_origin_and_nothing_more() {
        for (given, base, loopback) in [
            ("http://127.0.0.1:9470", "http://127.0.0.1:9470", true),
            ("http://127.0.0.1:9470/", "http://127.0.0.1:9470", true),
            ("HTTP://LocalHost:9470", "http://localhost:9470", true),
            ("http://[::1]:9470", "http://[::1]:9470", true),
            ("https://gw.example.com", "https://gw.example.com", false),
            (
                "https://gw.example.com:443/",
                "https://gw.example.com",
                false,
            ),
            ("http://10.0.0.5:9470", "http://10.0.0.5:9470", false),
        ] {
            let url = GatewayUrl::parse(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(url.base, base, "{given}");
            assert_eq!(url.is_loopback(), loopback, "{given}");
        }
        assert_eq!(
            GatewayUrl::parse("http://h:1/")
                .expect("valid")
                .server("github"),
            "http://h:1/servers/github/mcp"
        );
    }

    #[test]
    fn a_gateway_url_with_a_credential_path_or_other_scheme_is_refused_without_repeating_it() {
        for (given, why) in [
            ("http://s3cr3t@h:9470", "a user name before `@`"),
            ("http://u:s3cr3t@h:9470", "a password before `@`"),
            ("http://h:9470?token=s3cr3t", "the query parameter `token`"),
            ("http://h:9470/?q=1", "a query or a fragment"),
            ("http://h:9470/#x", "a query or a fragment"),
            ("http://h:9470/mcp", "a path, `/mcp`"),
            ("http://h:9470/servers/github/mcp", "a path"),
            ("ftp://h", "the scheme is `ftp`"),
            ("unix:/run/gw.sock", "the scheme is `unix`"),
            ("127.0.0.1:9470", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = GatewayUrl::parse(given).expect_err(given).to_string();
            assert!(e.contains(why), "{given}: {e}");
            assert!(e.starts_with("--gateway-url"), "{given}: {e}");
            assert!(!e.contains("s3cr3t"), "{given}: {e}");
        }
    }

    fn args(client: Client, flags: &[&str]) -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let client = format!("{client:?}").to_lowercase();
        let argv = ["export", client.as_str()]
            .into_iter()
            .chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn the_token_is_asked_for_where_the_gateway_needs_one() {
        let local = GatewayUrl::parse(DEFAULT_GATEWAY_URL).expect("valid");
        let remote = GatewayUrl::parse("https://gw.example.com").expect("valid");
        let env = |n: &str| TokenRef::Env(n.to_owned());
        let cases: &[(Client, &[&str], &GatewayUrl, bool, TokenRef)] = &[
            (Client::Claude, &[], &local, false, TokenRef::None),
            (Client::Claude, &[], &local, true, env(DEFAULT_TOKEN_ENV)),
            (Client::Cursor, &[], &remote, false, env(DEFAULT_TOKEN_ENV)),
            (Client::Vscode, &[], &remote, false, TokenRef::VscodeInput),
            (
                Client::Claude,
                &["--token"],
                &local,
                false,
                env(DEFAULT_TOKEN_ENV),
            ),
            (
                Client::Vscode,
                &["--token"],
                &local,
                false,
                TokenRef::VscodeInput,
            ),
            (
                Client::Claude,
                &["--token-env", "GW"],
                &local,
                false,
                env("GW"),
            ),
            (
                Client::Vscode,
                &["--token-env", "GW"],
                &local,
                false,
                env("GW"),
            ),
            (
                Client::Claude,
                &["--no-token"],
                &remote,
                true,
                TokenRef::None,
            ),
            // The last of --token and --no-token wins, as with other switches.
            (
                Client::Claude,
                &["--token", "--no-token"],
                &local,
                false,
                TokenRef::None,
            ),
            (
                Client::Claude,
                &["--no-token", "--token"],
                &local,
                false,
                env(DEFAULT_TOKEN_ENV),
            ),
        ];
        for (client, flags, gateway, file_set, want) in cases {
            let got = args(*client, flags)
                .token_ref(gateway, *file_set)
                .expect("valid");
            assert_eq!(&got, want, "{client:?} {flags:?} file set: {file_set}");
        }
        assert!(matches!(
            args(Client::Claude, &["--token-env", "1X"]).token_ref(&local, false),
            Err(ExportError::TokenEnv(_))
        ));
        assert!(matches!(
            args(Client::Claude, &["--token-env", "A}B"]).token_ref(&local, false),
            Err(ExportError::TokenEnv(_))
        ));
    }

    #[test]
    fn unknown_servers_are_all_named_beside_the_known_ones() {
        let known: Vec<String> = ["fetch", "github"].map(String::from).to_vec();
        let pick =
            |w: &[&str]| select(&known, &w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(pick(&[]).expect("all"), known);
        assert_eq!(pick(&["github", "github"]).expect("one"), ["github"]);
        let e = pick(&["nope", "github", "gone"]).expect_err("unknown");
        let ExportError::Unknown { unknown, known } = &e else {
            panic!("{e}")
        };
        assert_eq!(unknown, "gone, nope");
        assert_eq!(known, "2 servers: fetch, github");
        assert!(matches!(
            select(&Vec::<String>::new(), &[]),
            Err(ExportError::NoServers)
        ));
    }

    #[test]
    fn each_client_gets_its_own_format_with_the_token_as_a_reference() {
        let gateway = GatewayUrl::parse(DEFAULT_GATEWAY_URL).expect("valid");
        let servers = ["fetch".to_owned(), "github".to_owned()];
        let token = TokenRef::Env(DEFAULT_TOKEN_ENV.to_owned());
        insta::assert_snapshot!(
            "claude",
            render(Client::Claude, &gateway, &servers, &token).expect("json")
        );
        insta::assert_snapshot!(
            "cursor",
            render(Client::Cursor, &gateway, &servers, &token).expect("json")
        );
        insta::assert_snapshot!(
            "vscode",
            render(Client::Vscode, &gateway, &servers, &TokenRef::VscodeInput).expect("json")
        );
        insta::assert_snapshot!(
            "vscode_no_token",
            render(Client::Vscode, &gateway, &servers, &TokenRef::None).expect("json")
        );
    }
}
