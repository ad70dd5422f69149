//! TYPE, per-platform BASE_URL defaults, and what each platform requires.

mod support;

use support::{load_env, load_env_err};
use uniproxy_config::{Platform, ProblemKind};

fn with(platform: &str, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut v = vec![("TYPE", platform.to_owned())];
    v.extend(extra.iter().map(|(k, val)| (*k, (*val).to_owned())));
    v
}

fn load_pairs(pairs: &[(&'static str, String)]) -> uniproxy_config::Settings {
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    load_env(&borrowed)
}

#[test]
fn type_names_and_aliases_in_any_case() {
    let cases = [
        ("openai", Platform::OpenAi),
        ("OpenAI", Platform::OpenAi),
        ("anthropic", Platform::Anthropic),
        ("google", Platform::Google),
        ("gemini", Platform::Google),
        ("azure_openai", Platform::AzureOpenAi),
        ("AZURE", Platform::AzureOpenAi),
        ("custom", Platform::Custom),
        ("Mock", Platform::Mock),
    ];
    for (name, platform) in cases {
        assert_eq!(name.parse::<Platform>().unwrap(), platform);
    }
    assert!("bogus".parse::<Platform>().is_err());
    for p in Platform::ALL {
        assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        assert_eq!(p.to_string(), p.as_str());
    }
    assert_eq!(Platform::AzureOpenAi.as_str(), "azure_openai");
}

#[test]
fn each_platform_has_its_documented_base_url() {
    let key = [("API_KEY", "k"), ("ACTUAL_NAME", "m")];
    let cases = [
        ("openai", "https://api.openai.com/v1"),
        ("anthropic", "https://api.anthropic.com/v1"),
        ("google", "https://generativelanguage.googleapis.com/v1beta"),
        ("custom", "http://localhost:11434/v1"),
    ];
    for (platform, url) in cases {
        let s = load_pairs(&with(platform, &key));
        assert_eq!(s.base_url.as_deref(), Some(url), "{platform}");
    }
    assert_eq!(load_env(&[("TYPE", "mock")]).base_url, None);
}

#[test]
fn base_url_is_validated_and_trailing_slashes_trimmed() {
    let s = load_env(&[
        ("TYPE", "azure_openai"),
        ("API_KEY", "k"),
        ("ACTUAL_NAME", "gpt-4o"),
        ("BASE_URL", "https://res.openai.azure.com/openai/deployments/gpt-4o//"),
    ]);
    assert_eq!(
        s.base_url.as_deref(),
        Some("https://res.openai.azure.com/openai/deployments/gpt-4o")
    );
    let s = load_env(&[
        ("TYPE", "custom"),
        ("ACTUAL_NAME", "m"),
        ("BASE_URL", "HTTP://[::1]:8080/v1/"),
    ]);
    assert_eq!(s.base_url.as_deref(), Some("http://[::1]:8080/v1"));

    for bad in [
        "ftp://x.example",
        "api.openai.com/v1",
        "https://",
        "https:///v1",
        "https://a b.com",
        "https://x.example/v1?x=1",
        "https://x.example:99999",
    ] {
        let e = load_env_err(&[("TYPE", "custom"), ("ACTUAL_NAME", "m"), ("BASE_URL", bad)]);
        assert_eq!(e.problems().len(), 1, "{bad}: {e}");
        assert!(e.to_string().contains("http:// or https://"), "{e}");
    }
}

#[test]
fn a_bare_host_gets_the_path_the_platforms_sdks_add_to_it() {
    // As the platforms' own SDKs take their base URLs (ANTHROPIC_BASE_URL, Google's, Azure's
    // azure_endpoint): what an old .env may hold.
    let cases = [
        ("openai", "https://api.openai.com/", "https://api.openai.com/v1"),
        ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1"),
        (
            "google",
            "https://generativelanguage.googleapis.com/",
            "https://generativelanguage.googleapis.com/v1beta",
        ),
        (
            "azure_openai",
            "https://res.openai.azure.com",
            "https://res.openai.azure.com/openai/deployments/gpt-4o",
        ),
        // A custom server, or an OpenAI gateway, may serve at its root (the OpenAI SDK adds no
        // path to its base URL); a URL with a path is kept.
        ("custom", "http://localhost:8080", "http://localhost:8080"),
        ("openai", "https://gateway.example", "https://gateway.example"),
        ("anthropic", "https://gateway.example/anthropic", "https://gateway.example/anthropic"),
        // The endpoint pasted whole (docs, curl examples, Azure's target URI without its
        // query): the proxy adds that path itself.
        ("custom", "http://localhost:11434/v1/chat/completions", "http://localhost:11434/v1"),
        ("openai", "https://api.openai.com/v1/chat/completions/", "https://api.openai.com/v1"),
        (
            "azure_openai",
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "https://res.openai.azure.com/openai/deployments/gpt-4o",
        ),
        ("anthropic", "https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1"),
        ("anthropic", "https://api.anthropic.com/messages", "https://api.anthropic.com/v1"),
    ];
    for (platform, given, used) in cases {
        let s = load_env(&[
            ("TYPE", platform),
            ("API_KEY", "k"),
            ("ACTUAL_NAME", "gpt-4o"),
            ("BASE_URL", given),
        ]);
        assert_eq!(s.base_url.as_deref(), Some(used), "{platform} {given}");
    }
}

#[test]
fn azure_requires_base_url() {
    let e = load_env_err(&[("TYPE", "azure_openai"), ("API_KEY", "k"), ("ACTUAL_NAME", "gpt-4o")]);
    let p = &e.problems()[0];
    assert_eq!(p.setting, "BASE_URL");
    assert!(matches!(p.kind, ProblemKind::Missing { .. }));
    assert!(e.to_string().contains("openai.azure.com"), "{e}");
}

#[test]
fn actual_name_is_required_except_for_the_mock() {
    for platform in ["openai", "anthropic", "google", "azure_openai", "custom"] {
        let e = load_env_err(&[
            ("TYPE", platform),
            ("API_KEY", "k"),
            ("BASE_URL", "https://x.example/v1"),
        ]);
        assert_eq!(e.problems().len(), 1, "{platform}: {e}");
        assert_eq!(e.problems()[0].setting, "ACTUAL_NAME");
        assert!(e.to_string().contains(&format!("required when TYPE is {}", platform)), "{e}");
    }
    assert_eq!(load_env(&[("TYPE", "mock")]).actual_name, "uniproxy-mock");
    assert_eq!(load_env(&[("TYPE", "mock"), ("ACTUAL_NAME", "my-mock")]).actual_name, "my-mock");
}

#[test]
fn api_key_is_required_for_hosted_platforms() {
    for platform in ["openai", "anthropic", "google", "azure_openai"] {
        let e = load_env_err(&[
            ("TYPE", platform),
            ("ACTUAL_NAME", "m"),
            ("BASE_URL", "https://x.example/v1"),
        ]);
        assert_eq!(e.problems().len(), 1, "{platform}: {e}");
        assert_eq!(e.problems()[0].setting, "API_KEY");
        assert!(matches!(e.problems()[0].kind, ProblemKind::Missing { .. }));

        // Set but empty is also rejected, naming where it came from.
        let e = load_env_err(&[
            ("TYPE", platform),
            ("ACTUAL_NAME", "m"),
            ("BASE_URL", "https://x.example/v1"),
            ("UNIPROXY_API_KEY", ""),
        ]);
        assert_eq!(e.problems().len(), 1, "{platform}: {e}");
        assert!(e.to_string().contains("UNIPROXY_API_KEY"), "{e}");
    }
    let s = load_env(&[("TYPE", "custom"), ("ACTUAL_NAME", "llama3")]);
    assert!(s.api_key.is_empty());
}

#[test]
fn missing_settings_say_where_type_came_from() {
    let e = load_env_err(&[("UNIPROXY_TYPE", "openai")]);
    let text = e.to_string();
    assert_eq!(e.problems().len(), 2, "{text}");
    assert!(text.contains("API_KEY is not set"), "{text}");
    assert!(text.contains("ACTUAL_NAME is not set"), "{text}");
    assert!(text.contains("environment variable UNIPROXY_TYPE"), "{text}");
}
