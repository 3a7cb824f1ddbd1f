//! `kong-pdk`: the plugin author's command (Pongo's `pongo init`, for Rust).
//!
//! ```text
//! kong-pdk new <name> [--path DIR] [--kong-pdk-path PATH]
//! ```
//!
//! `new` creates `DIR/<name>` (DIR defaults to the current directory): a plugin crate with
//! `Cargo.toml`, `src/lib.rs` (the plugin's configuration and handler), `tests/integration.rs`
//! (the plugin in a real gateway over every store strategy), `examples/kong-gateway.rs` (a
//! gateway with the plugin compiled in) and `kong.conf`. `--kong-pdk-path` makes the crate
//! depend on a local kong-pdk checkout instead of the registry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: kong-pdk new <name> [--path DIR] [--kong-pdk-path PATH]";

/// One file of a new plugin crate: where it goes and its template.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/new/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../../templates/new/lib.rs.tmpl")),
    (
        "tests/integration.rs",
        include_str!("../../templates/new/integration.rs.tmpl"),
    ),
    (
        "examples/kong-gateway.rs",
        include_str!("../../templates/new/kong-gateway.rs.tmpl"),
    ),
    ("kong.conf", include_str!("../../templates/new/kong.conf.tmpl")),
    ("README.md", include_str!("../../templates/new/README.md.tmpl")),
    (".gitignore", include_str!("../../templates/new/gitignore.tmpl")),
];

/// What `new` was asked for.
#[derive(Debug, PartialEq, Eq)]
struct New {
    name: String,
    dir: PathBuf,
    kong_pdk_path: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<New, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("new") => {}
        Some("-h" | "--help") | None => return Err(USAGE.to_owned()),
        Some(other) => return Err(format!("unknown command '{other}'\n{USAGE}")),
    }
    let (mut name, mut dir, mut kong_pdk_path) = (None, PathBuf::from("."), None);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--path" => dir = PathBuf::from(value("--path")?),
            "--kong-pdk-path" => kong_pdk_path = Some(PathBuf::from(value("--kong-pdk-path")?)),
            flag if flag.starts_with('-') => return Err(format!("unknown option '{flag}'\n{USAGE}")),
            _ if name.is_some() => return Err(format!("unexpected argument '{arg}'\n{USAGE}")),
            _ => name = Some(arg.clone()),
        }
    }
    let name = name.ok_or_else(|| format!("missing the plugin's name\n{USAGE}"))?;
    check_name(&name)?;
    Ok(New {
        name,
        dir,
        kong_pdk_path,
    })
}

/// A plugin name as Kong allows it and Cargo takes as a package name: lowercase letters,
/// digits and single dashes, starting with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name '{name}': use lowercase letters, digits and single dashes, starting with a letter (e.g. my-plugin)"
        ))
    }
}

/// `my-plugin` → `MyPlugin`.
fn struct_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes the crate; returns its directory.
fn generate(new: &New) -> Result<PathBuf, String> {
    let root = new.dir.join(&new.name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let kong_pdk = match &new.kong_pdk_path {
        Some(path) => {
            let path = std::fs::canonicalize(path).map_err(|e| format!("--kong-pdk-path {}: {e}", path.display()))?;
            format!("path = {:?}", path.display().to_string())
        }
        // kong-pdk is not on crates.io yet: the sources this command was built from, while
        // they are there (`cargo install --path kong-pdk` from a checkout).
        None if Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").exists() => {
            format!("path = {:?}", env!("CARGO_MANIFEST_DIR"))
        }
        None => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let vars = [
        ("{{name}}", new.name.clone()),
        ("{{crate}}", new.name.replace('-', "_")),
        ("{{struct}}", struct_name(&new.name)),
        ("{{kong_pdk}}", kong_pdk),
    ];
    for (path, template) in FILES {
        let text = vars.iter().fold((*template).to_owned(), |t, (k, v)| t.replace(k, v));
        write(&root.join(path), &text)?;
    }
    Ok(root)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|new| generate(&new).map(|root| (new, root)));
    match result {
        Ok((new, root)) => {
            println!("Created the {} plugin in {}", new.name, root.display());
            println!("  cd {} && cargo test", root.display());
            ExitCode::SUCCESS
        }
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_are_checked_as_kong_and_cargo_need() {
        for good in ["my-plugin", "rate-guard2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["My-plugin", "my_plugin", "-x", "x-", "a--b", "9lives", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(struct_name("my-plugin"), "MyPlugin");
        assert_eq!(struct_name("rate-guard2"), "RateGuard2");
    }

    #[test]
    fn the_command_line_is_parsed_with_clear_errors() {
        let new = parse(&args(&["new", "my-plugin", "--path", "/x"])).unwrap();
        assert_eq!(
            new,
            New {
                name: "my-plugin".into(),
                dir: "/x".into(),
                kong_pdk_path: None
            }
        );
        assert!(
            parse(&args(&["new"]))
                .unwrap_err()
                .starts_with("missing the plugin's name")
        );
        assert!(
            parse(&args(&["new", "a", "b"]))
                .unwrap_err()
                .starts_with("unexpected argument 'b'")
        );
        assert!(
            parse(&args(&["new", "a", "--path"]))
                .unwrap_err()
                .starts_with("--path needs a value")
        );
        assert!(
            parse(&args(&["init"]))
                .unwrap_err()
                .starts_with("unknown command 'init'")
        );
        assert!(
            parse(&args(&["new", "Bad"]))
                .unwrap_err()
                .starts_with("invalid plugin name 'Bad'")
        );
    }

    #[test]
    fn new_writes_a_crate_with_the_names_filled_in_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("kong-pdk-new-{}-{}", std::process::id(), line!()));
        let new = New {
            name: "rate-guard".into(),
            dir: dir.clone(),
            kong_pdk_path: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        };
        let root = generate(&new).unwrap();
        for (path, _) in FILES {
            let text = std::fs::read_to_string(root.join(path)).unwrap();
            assert!(!text.contains("{{"), "{path} has an unfilled placeholder:\n{text}");
        }
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct RateGuard {}") && lib.contains("name = \"rate-guard\""));
        let test = std::fs::read_to_string(root.join("tests/integration.rs")).unwrap();
        assert!(test.contains("use rate_guard::RateGuard;"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("path = {:?}", env!("CARGO_MANIFEST_DIR"))),
            "{manifest}"
        );
        assert!(generate(&new).unwrap_err().ends_with("already exists"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
