//! An `.env` written for the original Python service loads unchanged: the
//! grammar of python-dotenv 1.2.2, and names in any case as pydantic-settings
//! matched them. Expected values are what python-dotenv's `dotenv_values`
//! gives for the same file.

mod support;

use std::path::PathBuf;

use support::{load_dotenv, write};
use uniproxy_config::{ConfigError, Origin, Platform, Sources, load};

const PYTHON_ENV: &str = r#"# LLM Proxy configuration
# Platform type: openai, anthropic, google, azure_openai, custom
TYPE=anthropic

# Upstream credentials
API_KEY="sk-ant-api03-0123456789abcdef"
BASE_URL=https://api.anthropic.com/v1/
ACTUAL_NAME='claude-sonnet-4-5'

# Model capabilities
ENABLED=True
MAX_TOKENS=8192
SUPPORTS_STREAMING=true
SUPPORTS_FUNCTION_CALLING=False

# Server
HOST=0.0.0.0
PORT=8000

# Storage
DATABASE_URL=sqlite+aiosqlite:///./data/proxy.db
LOG_FILE_PATH=./logs/proxy.log

# Settings the Rust service does not know are ignored.
PYTHONUNBUFFERED=1
UVICORN_WORKERS=4
"#;

#[test]
fn old_python_dotenv_loads() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", PYTHON_ENV);
    let s = load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap();
    assert_eq!(s.platform, Platform::Anthropic);
    assert!(!s.type_was_defaulted());
    assert_eq!(s.api_key.expose(), "sk-ant-api03-0123456789abcdef");
    assert_eq!(s.base_url.as_deref(), Some("https://api.anthropic.com/v1"));
    assert_eq!(s.actual_name, "claude-sonnet-4-5");
    assert!(s.enabled);
    assert_eq!(s.max_tokens, 8192);
    assert!(s.supports_streaming);
    assert!(!s.supports_function_calling);
    assert_eq!(s.listen_addr(), "0.0.0.0:8000");
    assert_eq!(s.database_path, PathBuf::from("./data/proxy.db"));
    assert_eq!(s.log_file_path, PathBuf::from("./logs/proxy.log"));
}

#[test]
fn old_python_dotenv_with_windows_line_endings_and_bom_loads() {
    let dir = tempfile::tempdir().unwrap();
    let content = format!("\u{feff}{}", PYTHON_ENV.replace('\n', "\r\n"));
    let dotenv = write(dir.path(), ".env", &content);
    let s = load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap();
    assert_eq!(s.platform, Platform::Anthropic);
    assert_eq!(s.api_key.expose(), "sk-ant-api03-0123456789abcdef");
    assert_eq!(s.port, 8000);
}

#[test]
fn the_environment_overrides_the_old_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", PYTHON_ENV);
    let sources = Sources {
        dotenv: Some(dotenv),
        env: vec![
            ("UNIPROXY_PORT".into(), "0".into()),
            ("ACTUAL_NAME".into(), "claude-opus-4-1".into()),
        ],
        ..Sources::default()
    };
    let s = load(&sources).unwrap();
    assert_eq!(s.port, 0);
    assert_eq!(s.actual_name, "claude-opus-4-1");
}

/// An old `.env` as users wrote it: each line here broke start-up, or was
/// read differently, before the `.env` grammar followed python-dotenv.
const PASTED_ENV: &str = r#"# Pasted from the old service
export type=custom
Actual_Name=${MODEL_NAME:-llama3.2}
api_key=sk-pa$word$HOME
APP_NAME=My Old Proxy
DEBUG
CORS_ALLOW_ORIGINS=["https://a.example","https://b.example"]
UNRELATED='never closed
base_url = http://localhost:11434/v1  # Ollama
"#;

#[test]
fn a_pasted_old_dotenv_loads_as_python_read_it() {
    let s = load_dotenv(PASTED_ENV, &[("HOME", "/root")]).unwrap();
    assert_eq!(s.platform, Platform::Custom);
    assert_eq!(s.actual_name, "llama3.2");
    assert_eq!(s.api_key.expose(), "sk-pa$word$HOME");
    assert_eq!(s.cors_allow_origins, ["https://a.example", "https://b.example"]);
    assert_eq!(s.base_url.as_deref(), Some("http://localhost:11434/v1"));
}

/// `$NAME` without braces is kept as written, quoted or not.
#[test]
fn a_dollar_sign_in_a_value_is_kept() {
    let text =
        "TYPE=custom\nAPI_KEY=sk-pa$word$HOME\nADMIN_KEY=sk-ab$1x\nACTUAL_NAME=\"sk-pa$HOME\"\n";
    let s = load_dotenv(text, &[("HOME", "/root")]).unwrap();
    assert_eq!(s.api_key.expose(), "sk-pa$word$HOME");
    assert_eq!(s.admin_key.unwrap().expose(), "sk-ab$1x");
    assert_eq!(s.actual_name, "sk-pa$HOME");
}

/// `${NAME}` and `${NAME:-default}` expand from the values above in
/// the file, else from the environment, in every value (single-quoted too).
#[test]
fn braced_variables_expand_like_python_dotenv() {
    let text = "TYPE=custom\nACTUAL_NAME=${MODEL_NAME:-gpt-4o-mini}\n";
    assert_eq!(load_dotenv(text, &[]).unwrap().actual_name, "gpt-4o-mini");
    let s = load_dotenv(text, &[("MODEL_NAME", "from-env")]).unwrap();
    assert_eq!(s.actual_name, "from-env");

    // A value set above in the file wins over the environment.
    let text = "MODEL_NAME=from-file\nTYPE=custom\nACTUAL_NAME=${MODEL_NAME}\n";
    let s = load_dotenv(text, &[("MODEL_NAME", "from-env")]).unwrap();
    assert_eq!(s.actual_name, "from-file");

    let text = "TYPE=custom\nACTUAL_NAME=m\nAPI_KEY='sk-${HOME}'\nADMIN_KEY=${NOWHERE}x\n";
    let s = load_dotenv(text, &[("HOME", "/home/test")]).unwrap();
    assert_eq!(s.api_key.expose(), "sk-/home/test");
    assert_eq!(s.admin_key.unwrap().expose(), "x");
}

/// Unquoted values keep their inner spaces, lose a ` # comment`, and
/// a bare `KEY` line is ignored.
#[test]
fn unquoted_values_with_spaces_and_bare_keys_load() {
    let text = "APP_NAME=My Old Proxy\nTYPE=custom\nACTUAL_NAME=my model\n\
                CORS_ALLOW_ORIGINS= https://a.example , https://b.example \n\
                DEBUG\nAPI_KEY=sk-a#b # the key\n";
    let s = load_dotenv(text, &[]).unwrap();
    assert_eq!(s.actual_name, "my model");
    assert_eq!(s.cors_allow_origins, ["https://a.example", "https://b.example"]);
    assert_eq!(s.api_key.expose(), "sk-a#b");
    // A bare setting name is no value: the one above it no longer counts.
    assert_eq!(load_dotenv("PORT=1\nPORT\n", &[]).unwrap().port, 8000);
}

/// Names match in any case, in `.env` and in the environment, and
/// the origin names the variable as written.
#[test]
fn names_match_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "type=custom\nactual_name=x\nmax_tokens=bad\n");
    let sources = |env: &[(&str, &str)]| Sources {
        dotenv: Some(dotenv.clone()),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Sources::default()
    };
    let e = load(&sources(&[("Uniproxy_Port", "bad")])).unwrap_err();
    let origin_of = |setting: &str| {
        e.problems().iter().find(|p| p.setting == setting).map(|p| p.origin.clone()).unwrap()
    };
    assert_eq!(
        origin_of("MAX_TOKENS"),
        Origin::Dotenv { path: dotenv.clone(), var: "max_tokens".into() }
    );
    assert_eq!(origin_of("PORT"), Origin::Environment { var: "Uniproxy_Port".into() });

    let s = load(&sources(&[("Actual_Name", "y"), ("MAX_TOKENS", "5")])).unwrap();
    assert_eq!(s.platform, Platform::Custom);
    assert_eq!(s.actual_name, "y", "the environment wins over .env in any case");
    assert!(!s.type_was_defaulted());
}

/// Within a layer, `UNIPROXY_NAME` wins over `NAME`, and the upper-case
/// spelling over other cases, wherever each is written.
#[test]
fn the_upper_case_spelling_wins_within_a_layer() {
    let s = load_dotenv("PORT=1\nport=2\n", &[]).unwrap();
    assert_eq!(s.port, 1);
    let s = load_dotenv("port=2\nUNIPROXY_PORT=3\nuniproxy_port=4\n", &[]).unwrap();
    assert_eq!(s.port, 3);
    let s = load_dotenv("uniproxy_port=4\nPORT=1\n", &[]).unwrap();
    assert_eq!(s.port, 4, "the prefix wins first, whatever the case");
    let s = load_dotenv("port=2\nPort=5\n", &[]).unwrap();
    assert_eq!(s.port, 5, "among other cases, the later one wins");
    let s = load_dotenv("", &[("port", "2"), ("PORT", "1"), ("Port", "3")]).unwrap();
    assert_eq!(s.port, 1);
    // An empty upper-case value counts as not set, as before.
    let s = load_dotenv("", &[("PORT", ""), ("port", "6")]).unwrap();
    assert_eq!(s.port, 6);
}

/// A statement python-dotenv cannot parse is an error when it is for one of
/// the settings (in any case), and skipped, as python-dotenv skips it, when not.
#[test]
fn unparsable_lines_fail_only_for_settings() {
    let text = "NOTES='an unterminated quote\nPORT=1\nOTHER=\"x\" trailing\n";
    assert_eq!(load_dotenv(text, &[]).unwrap().port, 1);

    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "PORT=1\r\n\r\napi_key=\"sk-secret\" trailing\r\n");
    let e = load(&Sources { dotenv: Some(dotenv.clone()), ..Sources::default() }).unwrap_err();
    match &e {
        ConfigError::DotenvSyntax { path, line, variable } => {
            assert_eq!((path, *line, variable.as_deref()), (&dotenv, Some(3), Some("api_key")));
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.to_string().contains("sk-secret"), "{e}");
}

/// `Sources::from_process` keeps every variable, so that `${NAME}`
/// can name any of them; only settings are read as settings.
#[test]
fn from_process_keeps_every_variable_for_expansion() {
    let sources = Sources::from_process(None);
    let mut names: Vec<&str> = sources.env.iter().map(|(name, _)| name.as_str()).collect();
    let mut expected: Vec<String> =
        std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(!expected.is_empty());
}
