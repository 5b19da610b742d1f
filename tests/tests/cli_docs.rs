//! Every `slim ...` command the documentation shows parses: the README, docs/*.md (code blocks
//! and inline code) and the scripts in docs/examples/ are scanned for command lines that run the
//! `slim` CLI (`slim`, `./target/release/slim`, `cargo run -p slim -- ...`, `"$SLIM"`), and
//! each is handed to the CLI's own argument parser (`slim::app::parse_from`), so a flag that
//! does not exist, a missing value or a wrong subcommand fails this test.

use slim_tests::repo_root as repo;
use std::path::{Path, PathBuf};

/// One command found in a document.
#[derive(Debug, Clone)]
struct Found {
    /// `file:line`.
    place: String,
    /// The command as written (one logical line).
    text: String,
    /// The arguments after the program name.
    args: Vec<String>,
}

/// Splits a shell line into words: quotes grouped and removed, `# comment` dropped, shell
/// operators (`|`, `&&`, `;`, `>`...) kept as words of their own.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        _ => word.push(q),
                    }
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '|' | '&' | ';' | '<' | '>' => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
                let mut op = c.to_string();
                while let Some(&n) = chars.peek() {
                    if matches!(n, '|' | '&' | '>') {
                        op.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(op);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

fn is_operator(word: &str) -> bool {
    word.chars()
        .all(|c| matches!(c, '|' | '&' | ';' | '<' | '>'))
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The `slim` arguments of every `slim` command on one logical shell line.
fn slim_commands(line: &str) -> Vec<Vec<String>> {
    let line = line.trim_start();
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let mut found = Vec::new();
    for command in words(line).split(|w| is_operator(w)) {
        let mut rest = command;
        while let Some((first, tail)) = rest.split_first() {
            if is_assignment(first) || first == "time" || first == "exec" {
                rest = tail;
            } else {
                break;
            }
        }
        let Some((program, tail)) = rest.split_first() else {
            continue;
        };
        let built =
            program.ends_with("/slim") && (program.contains("target/") || program.contains("bin/"));
        let args: Option<&[String]> = if program == "slim" || built || program == "$SLIM" {
            Some(tail)
        } else if program == "cargo" && tail.first().is_some_and(|w| w == "run") {
            let is_slim = tail
                .windows(2)
                .any(|w| (w[0] == "-p" || w[0] == "--package") && w[1] == "slim")
                || tail.iter().any(|w| w == "--package=slim" || w == "-pslim");
            match tail.iter().position(|w| w == "--") {
                Some(dash) if is_slim => Some(&tail[dash + 1..]),
                None if is_slim => Some(&[]),
                _ => None,
            }
        } else {
            None
        };
        if let Some(args) = args {
            found.push(args.to_vec());
        }
    }
    found
}

/// Inline code spans of a Markdown line.
fn inline_code(line: &str) -> Vec<&str> {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, span)| span)
        .collect()
}

/// Joins lines ending with `\` into one logical line; yields (first line number, text).
fn logical_lines<'a>(lines: impl Iterator<Item = (usize, &'a str)>) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in lines {
        let (start, mut text) = pending.take().unwrap_or((n, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                text.push_str(head);
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(line);
                out.push((start, text));
            }
        }
    }
    out.extend(pending);
    out
}

/// Every `slim` command in a Markdown file: in fenced code blocks, and in inline code spans
/// that start with a command (`slim status [--watch]`: brackets mark optional parts).
fn scan_markdown(path: &Path, text: &str) -> Vec<Found> {
    let name = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut found = Vec::new();
    let mut fence: Option<String> = None;
    let mut block: Vec<(usize, &str)> = Vec::new();
    let flush = |block: &mut Vec<(usize, &str)>, found: &mut Vec<Found>| {
        for (n, line) in logical_lines(block.drain(..)) {
            for args in slim_commands(&line) {
                found.push(Found {
                    place: format!("{name}:{n}"),
                    text: line.trim().to_string(),
                    args,
                });
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        match &fence {
            Some(marker) => {
                if trimmed.starts_with(marker.as_str()) {
                    fence = None;
                    flush(&mut block, &mut found);
                } else {
                    block.push((n, line));
                }
            }
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                fence = Some(trimmed[..3].to_string());
            }
            None => {
                for span in inline_code(line) {
                    let span = span.replace(['[', ']'], "");
                    // Prose names commands (`slim profile`, `slim request`); a span with a
                    // flag is a command line to check.
                    let commands = slim_commands(&span)
                        .into_iter()
                        .filter(|args| args.iter().any(|a| a.starts_with('-')));
                    for args in commands {
                        found.push(Found {
                            place: format!("{name}:{n}"),
                            text: span.clone(),
                            args,
                        });
                    }
                }
            }
        }
    }
    flush(&mut block, &mut found);
    found
}

/// Every `slim` command in a shell script; variables given a default in the script
/// (`PORT="${PORT:-9464}"`) are replaced by it.
fn scan_script(path: &Path, text: &str) -> Vec<Found> {
    let name = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut defaults: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some((var, rest)) = line.trim().split_once('=') else {
            continue;
        };
        let rest = rest.trim_matches('"');
        if let Some(value) = rest
            .strip_prefix(&format!("${{{var}:-"))
            .and_then(|v| v.strip_suffix('}'))
        {
            defaults.push((var.to_string(), value.to_string()));
        }
    }
    let expand = |line: &str| {
        let mut line = line.to_string();
        for (var, value) in &defaults {
            line = line
                .replace(&format!("${{{var}}}"), value)
                .replace(&format!("${var}"), value);
        }
        line
    };
    logical_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l)))
        .into_iter()
        .flat_map(|(n, line)| {
            slim_commands(&expand(&line))
                .into_iter()
                .map(|args| Found {
                    place: format!("{name}:{n}"),
                    text: line.trim().to_string(),
                    args,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn documented_commands() -> Vec<Found> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        found.extend(scan_markdown(file, &text));
    }
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo().join("docs/examples"))
        .expect("docs/examples/ is readable")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    for script in &scripts {
        let text = std::fs::read_to_string(script).unwrap();
        found.extend(scan_script(script, &text));
    }
    found
}

/// Why clap refuses `args`, or `None` when they parse (`--help` counts as parsing).
fn refusal(args: &[String]) -> Option<String> {
    let argv = std::iter::once("slim".to_string()).chain(args.iter().cloned());
    match slim::app::parse_from(argv) {
        Ok(_) => None,
        // --help and --version "fail" with status 0.
        Err(e) if e.exit_code() == 0 => None,
        Err(e) => Some(e.render().to_string()),
    }
}

#[test]
fn every_documented_slim_command_parses() {
    let found = documented_commands();
    for f in &found {
        eprintln!("{}: slim {}", f.place, f.args.join(" "));
    }
    // Not vacuous: the README alone shows more than a dozen.
    assert!(
        found.len() >= 20,
        "only {} slim commands found in the docs: is the scanner broken?",
        found.len()
    );
    for needle in [
        "README.md",
        "docs/router.md",
        "docs/examples/dashboard_screenshot.sh",
        "docs/prerequisites.md",
        "docs/bring-your-own-model.md",
        "docs/rollout.md",
        "docs/troubleshooting.md",
    ] {
        assert!(
            found.iter().any(|f| f.place.starts_with(needle)),
            "no slim command found in {needle}"
        );
    }
    let failures: Vec<String> = found
        .iter()
        .filter_map(|f| {
            refusal(&f.args).map(|why| format!("{}: `{}`\n{}", f.place, f.text, why.trim_end()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} documented command(s) do not parse:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_scanner_finds_commands_in_their_usual_spellings_and_rejects_unknown_flags() {
    let line = "RAYON_NUM_THREADS=1 slim train --preset efficiency   # writes out/x";
    assert_eq!(
        slim_commands(line),
        vec![vec!["train", "--preset", "efficiency"]]
    );
    assert_eq!(
        slim_commands("$ ./target/release/slim status --broker 'mqtt://h:1' | head -3"),
        vec![vec!["status", "--broker", "mqtt://h:1"]]
    );
    assert_eq!(
        slim_commands("cargo run --release -p slim -- demo --router ppo >log 2>&1 &"),
        vec![vec!["demo", "--router", "ppo"]]
    );
    assert_eq!(
        slim_commands("\"$SLIM\" demo --keep-running && echo done"),
        vec![vec!["demo", "--keep-running"]]
    );
    assert!(slim_commands("sudo -u slim /usr/local/bin/slim-agent doctor").is_empty());
    assert!(slim_commands("cargo run -p slim-agent -- doctor").is_empty());
    assert!(slim_commands("Reproduce: slim demo --rate 5").is_empty());
    assert!(slim_commands("ls /etc/slim").is_empty() && slim_commands("/etc/slim").is_empty());
    assert_eq!(
        slim_commands("/usr/local/bin/slim models"),
        vec![vec!["models"]]
    );

    let script = "DURATION=\"${DURATION:-45s}\"\n\"$SLIM\" demo --duration \"$DURATION\" \\\n  --rates 60,4 >\"$log\" 2>&1 &\n";
    let found = scan_script(Path::new("x.sh"), script);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].place, "x.sh:2");
    assert_eq!(
        found[0].args,
        ["demo", "--duration", "45s", "--rates", "60,4"]
    );

    let md = "Run `slim demo --rate 50` (see `slim demo`) or\n\n```bash\nslim bench \\\n  --rate 100 --duration 20s\nslim demo --rates 50 --models digits\n```\n";
    let found = scan_markdown(Path::new("x.md"), md);
    let places: Vec<&str> = found.iter().map(|f| f.place.as_str()).collect();
    assert_eq!(places, ["x.md:1", "x.md:4", "x.md:6"]);
    // The check has teeth: `--rate` is not a `slim demo` flag (it is `--rates`).
    assert!(refusal(&found[0].args).is_some_and(|e| e.contains("--rate")));
    assert_eq!(refusal(&found[1].args), None);
    assert_eq!(refusal(&found[2].args), None);
    assert!(refusal(&["demo".into(), "--nonexistent".into()]).is_some());
    assert_eq!(refusal(&["demo".into(), "--help".into()]), None);
}

/// Every key of a TOML table, nested tables included (`[broker]` gives `broker` and its keys).
fn toml_keys(table: &toml::Table, out: &mut Vec<String>) {
    for (key, value) in table {
        out.push(key.clone());
        if let toml::Value::Table(inner) = value {
            toml_keys(inner, out);
        }
    }
}

/// The agent's and the coordinator's config with every optional key set, so that each key
/// appears when serialized.
fn every_config_key() -> Vec<String> {
    let path = Some(PathBuf::from("x"));
    let broker = slim_mqtt::BrokerOptions {
        username: Some("u".into()),
        password: Some("p".into()),
        ca_file: path.clone(),
        client_cert: path.clone(),
        client_key: path.clone(),
        ..Default::default()
    };
    let agent = slim_agent::AgentConfig {
        broker: broker.clone(),
        memory_budget_mb: Some(1),
        state_dir: path.clone(),
        profile: path.clone(),
        assignment_key_file: path.clone(),
        ..Default::default()
    };
    let mut coordinator = slim_coordinator::CoordinatorConfig {
        broker,
        shared_group: Some("g".into()),
        policy: path.clone(),
        assignment_key_file: path.clone(),
        ..Default::default()
    };
    coordinator.online.save = path;
    let mut keys = Vec::new();
    for table in [
        toml::Table::try_from(&agent).unwrap(),
        toml::Table::try_from(&coordinator).unwrap(),
    ] {
        toml_keys(&table, &mut keys);
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn the_configuration_reference_documents_every_config_key() {
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let keys = every_config_key();
    assert!(keys.len() > 50, "only {} keys: {keys:?}", keys.len());
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            !doc.contains(&format!("`{k}`"))
                && !doc.contains(&format!("`[{k}]`"))
                && !doc.contains(&format!(".{k}]`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention these config keys: {missing:?}"
    );
}
