//! An `.env` written for the original Python service loads unchanged.

mod support;

use std::path::PathBuf;

use support::write;
use uniproxy_config::{Platform, Sources, load};

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
