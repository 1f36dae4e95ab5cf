//! `mcpctl probe URL` and `mcpctl probe --stdio -- CMD ARGS...`: one readiness
//! probe (design §6) against a server, outside any fleet. Handy to check what
//! `apply` will see before writing a spec for a server.

use super::{Format, Outcome};
use crate::model::{HttpHeader, HttpHeaderValue, PROBE_HEADERS, SecretValue};
use crate::probe::{self, HttpTransport, ProbeInfo};
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Legacy SSE when the path ends in /sse, else streamable HTTP; each falls back to the other.
    Auto,
    StreamableHttp,
    /// The legacy HTTP+SSE transport (protocol 2024-11-05).
    Sse,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's MCP endpoint, such as http://127.0.0.1:8080/mcp.
    #[arg(required_unless_present = "stdio", conflicts_with = "stdio")]
    pub url: Option<String>,
    /// Start the command given after `--` and probe it over stdin/stdout.
    #[arg(long, requires = "cmd")]
    pub stdio: bool,
    /// With --stdio: the server command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
    /// The HTTP transport to speak.
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,
    /// A header for every request, as `Name: value` (repeatable), e.g.
    /// `-H 'Authorization: Bearer TOKEN'`. Values are treated as secrets.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = HeaderParser, conflicts_with = "stdio")]
    pub headers: Vec<HttpHeader>,
    /// How long the one attempt may take, fallbacks included.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub async fn run(args: Args) -> miette::Result<Outcome> {
    let (target, result) = match (&args.url, args.stdio) {
        (Some(url), false) => {
            let transport = match args.transport {
                Transport::Auto => HttpTransport::Auto,
                Transport::StreamableHttp => HttpTransport::StreamableHttp,
                Transport::Sse => HttpTransport::Sse,
            };
            (
                // The URL is echoed in the error: not a token it may hold.
                crate::model::urls::redact(url),
                probe::probe_url(url, &args.headers, transport, args.timeout).await,
            )
        }
        (None, true) => (
            args.cmd.join(" "),
            probe_command(&args.cmd, args.timeout).await?,
        ),
        // clap's `required_unless_present` and `conflicts_with` rule these out.
        _ => miette::bail!("give either a URL or --stdio -- CMD ARGS..."),
    };
    let info = result.map_err(|reason| miette::miette!("{target} is not ready: {reason}"))?;
    let out = match args.output {
        Format::Text => text(&info),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&info)
                .map_err(|e| miette::miette!("cannot render the result: {e}"))?;
            json.push('\n');
            json
        }
    };
    super::write_stdout(&out)?;
    Ok(Outcome::Success)
}

/// Reads `-H`. clap's own parsers quote a rejected argument back in their
/// error, and this one may hold a token: its errors never do.
#[derive(Debug, Clone, Copy)]
pub struct HeaderParser;

impl clap::builder::TypedValueParser for HeaderParser {
    type Value = HttpHeader;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<HttpHeader, clap::Error> {
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --header: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("it is not UTF-8".into()))?;
        parse_header(text).map_err(invalid)
    }
}

/// `Name: value`, as curl takes it. The value may well be a token, so it is
/// kept as a secret and never quoted back.
fn parse_header(arg: &str) -> Result<HttpHeader, String> {
    let Some((name, value)) = arg.split_once(':') else {
        return Err("expected `Name: value`, e.g. `Authorization: Bearer TOKEN`".into());
    };
    let name = name.trim();
    if !HttpHeader::is_valid_name(name) {
        return Err(format!(
            "`{}` is not a header name: use letters, digits and any of !#$%&'*+-.^_`|~",
            name.escape_default()
        ));
    }
    if PROBE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("the probe sets `{name}` itself"));
    }
    let value = value.trim_start_matches([' ', '\t']);
    if HttpHeader::invalid_value_char(value).is_some() {
        return Err(format!(
            "the value of `{name}` has a control character (such as a line break)"
        ));
    }
    Ok(HttpHeader {
        name: name.to_owned(),
        value: HttpHeaderValue::Sensitive(SecretValue::new(value.to_owned())),
    })
}

/// Spawns `cmd` with piped stdin and stdout (stderr stays the terminal's, so
/// the server's own complaints are seen), probes it, and kills it.
async fn probe_command(
    cmd: &[String],
    timeout: Duration,
) -> miette::Result<Result<ProbeInfo, probe::ProbeError>> {
    let Some((program, rest)) = cmd.split_first() else {
        miette::bail!("--stdio needs a command after `--`");
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| miette::miette!("cannot start {program}: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        miette::bail!("{program} started without piped stdin and stdout");
    };
    let result = probe::probe_stdio(stdout, stdin, timeout).await;
    // The probe is done with it either way; a failure to kill means it already exited.
    let _ = child.kill().await;
    Ok(result)
}

fn text(info: &ProbeInfo) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let rows = [
        ("Era", info.era.to_string()),
        ("Protocol", info.protocol_version.clone()),
        ("Server", or_dash(&info.server_name)),
        ("Version", or_dash(&info.server_version)),
        ("Transport", info.transport.to_owned()),
        (
            "Latency",
            format!("{:.1} ms", info.latency.as_secs_f64() * 1000.0),
        ),
    ];
    rows.iter()
        .map(|(key, value)| format!("{:<11}{value}\n", format!("{key}:")))
        .collect()
}
