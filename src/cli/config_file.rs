//! `crmchat serve --config FILE`: every flag of `serve` is also a key of a TOML file (`data_dir = "/var/lib/x"`,
//! `demo = true`), and `serve --print-config` shows the settings in effect. A flag on the command line or its
//! `CRMCHAT_*` variable wins over the file, and the file over the defaults.
//!
//! The file is turned into flags: each key that the command line and the environment leave unset becomes
//! `--key=value` after the others, and clap parses the whole again. So every value in the file is checked exactly
//! as the same flag is, and a flag added to `serve` is a key at once.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Command};

/// What the command line asks for: a command to run, or the effective `serve` settings to print.
#[allow(clippy::large_enum_variant)] // one per process
#[derive(Debug)]
pub enum Parsed {
    Run(Cli),
    PrintConfig(String),
}

/// Keys that are not settings of the server.
const NOT_KEYS: &[&str] = &["config", "print_config"];

/// Parses `args` (the program name first) with the `--config` file of `serve`, if any.
pub fn parse_from(args: Vec<OsString>) -> Result<Parsed, clap::Error> {
    let mut command = Cli::command();
    let first = command.try_get_matches_from_mut(&args)?;
    let Some(("serve", serve)) = first.subcommand() else {
        return Ok(Parsed::Run(Cli::from_arg_matches(&first)?));
    };
    let file = serve.get_one::<PathBuf>("config").cloned();
    let mut from_file = BTreeSet::new();
    let matches = match &file {
        None => first.clone(),
        Some(path) => {
            let table = read_table(path).map_err(|e| invalid(&mut command, e))?;
            let extra = file_flags(&command, serve, &table, &mut from_file).map_err(|e| invalid(&mut command, e))?;
            let mut all = args;
            all.extend(extra);
            command.try_get_matches_from_mut(all)?
        }
    };
    let cli = Cli::from_arg_matches(&matches)?;
    match &cli.command {
        Command::Serve(settings) if settings.print_config => {
            let serve = matches.subcommand_matches("serve").expect("parsed as serve");
            Ok(Parsed::PrintConfig(effective(&command, serve, file.as_deref(), &from_file)))
        }
        _ => Ok(Parsed::Run(cli)),
    }
}

fn invalid(command: &mut clap::Command, message: String) -> clap::Error {
    command.error(clap::error::ErrorKind::InvalidValue, message)
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| format!("--config {}: {e}", path.display()))
}

fn serve_command(command: &clap::Command) -> &clap::Command {
    command.find_subcommand("serve").expect("crmchat has a serve command")
}

/// The settings of `serve`: its options with a long name, in their order, keyed by id (`data_dir`).
fn settings(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    serve_command(command)
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_KEYS.contains(&a.get_id().as_str()))
        .filter(|a| matches!(a.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue))
}

/// The flags that stand for the file's keys, leaving out those the command line or the environment set.
fn file_flags(
    command: &clap::Command,
    serve: &ArgMatches,
    table: &toml::Table,
    from_file: &mut BTreeSet<String>,
) -> Result<Vec<OsString>, String> {
    let by_id: BTreeMap<String, &clap::Arg> = settings(command).map(|a| (a.get_id().to_string(), a)).collect();
    let mut flags = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let Some(arg) = by_id.get(&id) else {
            let known: Vec<&str> = by_id.keys().map(String::as_str).collect();
            return Err(format!("unknown key `{key}` in the config file (the keys are: {})", known.join(", ")));
        };
        if matches!(serve.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let long = arg.get_long().expect("settings have a long name");
        let takes_value = arg.get_action().takes_values();
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        flags.push(OsString::from(format!("--{long}")));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "`{key}` in the config file: {} is not a value `--{long}` takes",
                        other.type_str()
                    ));
                }
            };
            if !takes_value {
                return Err(format!("`{key}` in the config file is a switch: write `{key} = true` or `false`"));
            }
            flags.push(OsString::from(format!("--{long}={text}")));
        }
        from_file.insert(id);
    }
    Ok(flags)
}

/// The settings in effect as a TOML file that `--config` reads back, each with where it came from. Secrets are
/// replaced by `<redacted>`: flags that hide their variable's value, and passwords inside URLs.
fn effective(command: &clap::Command, serve: &ArgMatches, file: Option<&Path>, from_file: &BTreeSet<String>) -> String {
    let mut out = String::from(
        "# The settings `crmchat serve` would run with. Flags and CRMCHAT_* variables win over --config, which wins\n\
         # over the defaults. This text is a valid config file (secrets are redacted).\n",
    );
    for arg in settings(command) {
        let id = arg.get_id().as_str();
        let source = match serve.value_source(id) {
            _ if from_file.contains(id) => file.map(|f| f.display().to_string()).unwrap_or_default(),
            Some(ValueSource::CommandLine) => format!("--{}", arg.get_long().unwrap_or(id)),
            Some(ValueSource::EnvVariable) => {
                arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
            }
            Some(ValueSource::DefaultValue) => "default".into(),
            _ => String::new(),
        };
        let raw: Vec<String> = serve
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let secret = arg.is_hide_env_values_set();
        let takes_value = arg.get_action().takes_values();
        let value = if !takes_value {
            Some(serve.get_flag(id).to_string())
        } else if raw.is_empty() {
            None
        } else {
            let shown: Vec<String> = raw.iter().map(|v| toml_value(&redact(v, secret))).collect();
            Some(if shown.len() == 1 { shown[0].clone() } else { format!("[{}]", shown.join(", ")) })
        };
        match value {
            Some(value) => {
                let _ = writeln!(out, "{id} = {value}  # {source}");
            }
            None => {
                let _ = writeln!(out, "# {id} = (not set)");
            }
        }
    }
    out
}

fn redact(value: &str, secret: bool) -> String {
    if secret {
        "<redacted>".into()
    } else if value.contains("://") {
        crate::store::redact_url(value)
    } else {
        value.to_string()
    }
}

/// An integer as itself, anything else as a TOML string.
fn toml_value(value: &str) -> String {
    if value.parse::<i64>().is_ok() { value.to_string() } else { toml::Value::String(value.to_string()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, clap::Error> {
        parse_from(std::iter::once("crmchat").chain(args.iter().copied()).map(OsString::from).collect())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn serve_args(parsed: Parsed) -> crate::config::ServeArgs {
        match parsed {
            Parsed::Run(Cli { command: Command::Serve(args) }) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn keys_fill_in_what_the_command_line_leaves_unset() {
        let f = file("http = \"127.0.0.1:9000\"\ndemo = true\nplan = \"unlimited\"\nmax-body-bytes = 2048\n");
        let path = f.path().to_str().unwrap();
        let args = serve_args(parse(&["serve", "--config", path, "--http", "127.0.0.1:9001"]).unwrap());
        assert_eq!(args.http.to_string(), "127.0.0.1:9001", "the flag wins");
        assert!(args.demo);
        assert_eq!(args.plan.as_deref(), Some("unlimited"));
        assert_eq!(args.max_body_bytes, 2048);
        assert_eq!(args.https.to_string(), "127.0.0.1:8443", "the default where neither says");
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        let unknown = file("htttp = \"127.0.0.1:9000\"\n");
        let err = parse(&["serve", "--config", unknown.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("unknown key `htttp`") && err.contains("data_dir"), "{err}");
        let bad = file("plan = \"free\"\n");
        let err = parse(&["serve", "--config", bad.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("free") && err.contains("unlimited"), "{err}");
        let switch = file("demo = \"yes\"\n");
        let err = parse(&["serve", "--config", switch.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("switch"), "{err}");
        let err = parse(&["serve", "--config", "/nonexistent/crmchat.toml"]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/crmchat.toml"), "{err}");
    }

    #[test]
    fn print_config_names_sources_and_redacts() {
        let f = file("database = \"postgres://crmchat:hunter2@db/crmchat\"\ndemo = true\n");
        let path = f.path().to_str().unwrap();
        let Parsed::PrintConfig(text) =
            parse(&["serve", "--config", path, "--print-config", "--plan", "enterprise"]).unwrap()
        else {
            panic!("not printed")
        };
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&format!("demo = true  # {path}")), "{text}");
        assert!(text.contains("plan = \"enterprise\"  # --plan"), "{text}");
        assert!(text.contains("http = \"127.0.0.1:8080\"  # default"), "{text}");
        assert!(text.contains("# fixture = (not set)"), "{text}");
        // What it prints reads back as a config file.
        let again = file(&text.replace("<redacted>", "x"));
        serve_args(parse(&["serve", "--config", again.path().to_str().unwrap()]).unwrap());
    }
}
