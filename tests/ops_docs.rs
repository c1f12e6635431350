//! The operator's guide stays true to the code: docs/configuration.md documents exactly the
//! keys the configuration types accept (discovered from the types themselves, through the
//! "unknown field …, expected one of …" errors that `deny_unknown_fields` produces), every
//! TOML example in the docs and the README parses, and every relative link in the docs
//! points at a file and heading that exist.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use oxbridge_server::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What a key of the configuration holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Table,
    ArrayOfTables,
}

const PROBE: &str = "zz_probe_key";

/// The field names listed by a deny_unknown_fields error for `PROBE`, if it is one.
fn fields_from_error(error: &str) -> Option<Vec<String>> {
    let rest = error.split(&format!("unknown field `{PROBE}`")).nth(1)?;
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    let listed = rest.split("expected").nth(1)?;
    let listed = listed.lines().next().unwrap_or(listed);
    Some(
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The TOML that puts `PROBE` inside the table at `path` (each element says whether that
/// level is an array of tables).
fn probe_document(path: &[(String, bool)]) -> String {
    let mut doc = String::new();
    for depth in 1..=path.len() {
        let name: Vec<&str> = path[..depth].iter().map(|(n, _)| n.as_str()).collect();
        if path[depth - 1].1 {
            doc.push_str(&format!("[[{}]]\n", name.join(".")));
        } else if depth == path.len() {
            doc.push_str(&format!("[{}]\n", name.join(".")));
        }
    }
    doc.push_str(&format!("{PROBE} = 1\n"));
    doc
}

/// The fields of the table at `path`, or `None` if it is not a table.
fn table_fields(path: &[(String, bool)]) -> Option<Vec<String>> {
    let error = Config::parse(&probe_document(path)).err()?;
    fields_from_error(&error)
}

/// Every table of the configuration, by dotted path (`listener`, `upstream.imap`), with
/// its value keys; discovered from the types.
fn discover(path: Vec<(String, bool)>, tables: &mut BTreeMap<String, (Shape, Vec<String>)>) {
    let fields = table_fields(&path).unwrap_or_else(|| panic!("{path:?} is not a table"));
    let mut values = Vec::new();
    for field in fields {
        let mut as_table = path.clone();
        as_table.push((field.clone(), false));
        let mut as_array = path.clone();
        as_array.push((field.clone(), true));
        if table_fields(&as_table).is_some() {
            discover(as_table, tables);
        } else if table_fields(&as_array).is_some() {
            discover(as_array, tables);
        } else {
            values.push(field);
        }
    }
    let name: Vec<&str> = path.iter().map(|(n, _)| n.as_str()).collect();
    let shape = match path.last() {
        None => Shape::Table,
        Some((_, true)) => Shape::ArrayOfTables,
        Some((_, false)) => Shape::Table,
    };
    tables.insert(name.join("."), (shape, values));
}

fn config_tables() -> BTreeMap<String, (Shape, Vec<String>)> {
    let mut tables = BTreeMap::new();
    discover(Vec::new(), &mut tables);
    tables
}

/// The heading that documents a table: `## Top level`, `` ## `[admin]` ``,
/// `` ## `[[listener]]` ``.
fn heading_for(path: &str, shape: Shape) -> String {
    match (path, shape) {
        ("", _) => "Top level".to_string(),
        (_, Shape::ArrayOfTables) => format!("`[[{path}]]`"),
        _ => format!("`[{path}]`"),
    }
}

/// The keys documented in the reference table under each `##`/`###` heading of
/// docs/configuration.md.
fn documented_keys() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read("docs/configuration.md");
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in doc.lines() {
        if let Some(heading) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            current = heading.trim().to_string();
            sections.entry(current.clone()).or_default();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let Some(key) = cells
            .get(1)
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        {
            if cells.len() > 3 && key != "Key" {
                sections
                    .entry(current.clone())
                    .or_default()
                    .insert(key.to_string());
            }
        }
    }
    sections
}

#[test]
fn the_probe_sees_the_configuration_types() {
    let tables = config_tables();
    let (_, top) = &tables[""];
    assert!(top.contains(&"data_dir".to_string()), "{tables:#?}");
    assert_eq!(tables["listener"].0, Shape::ArrayOfTables);
    assert!(tables["listener"].1.contains(&"proxy_protocol".to_string()));
    assert!(tables["upstream.imap"].1.contains(&"address".to_string()));
    assert!(tables.contains_key("limits") && tables.contains_key("app"));
}

#[test]
fn configuration_reference_documents_exactly_the_accepted_keys() {
    let tables = config_tables();
    let documented = documented_keys();
    let mut problems = Vec::new();
    for (path, (shape, keys)) in &tables {
        let heading = heading_for(path, *shape);
        // Several tables of one type may share a section (`[upstream.imap]`, `[upstream.pop3]`).
        let Some((_, rows)) = documented
            .iter()
            .find(|(h, _)| *h == &heading || h.split(", ").any(|part| part == heading))
        else {
            if !keys.is_empty() {
                problems.push(format!("no section `## {heading}` for {keys:?}"));
            }
            continue;
        };
        for key in keys {
            if !rows.contains(key) {
                problems.push(format!("{heading}: `{key}` is accepted but not documented"));
            }
        }
        for key in rows {
            if !keys.contains(key) {
                problems.push(format!("{heading}: `{key}` is documented but not accepted"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of date:\n{}",
        problems.join("\n")
    );
}

/// The fenced blocks of `lang` in a Markdown text.
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some(String::new()),
            Some(block) if trimmed == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line.trim_start_matches("   "));
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_toml_example_in_the_docs_parses() {
    let mut checked = 0;
    for file in [
        "docs/configuration.md",
        "docs/operations.md",
        "docs/entra-setup.md",
        "docs/devices.md",
        "README.md",
    ] {
        for block in code_blocks(&read(file), "toml") {
            // Fragments (one table shown alone) parse as whole documents too.
            if let Err(e) = Config::parse(&block) {
                panic!("{file}: this example does not parse: {e}\n{block}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples found");
    // The complete example uses every table the types have.
    let doc = read("docs/configuration.md");
    let complete = code_blocks(&doc, "toml").into_iter().next().unwrap();
    let config = Config::parse(&complete).unwrap();
    assert!(!config.listeners.is_empty() && !config.apps.is_empty() && !config.relay.is_empty());
    for (path, (shape, keys)) in config_tables() {
        // The root, and tables that only hold other tables (`[upstream]`).
        if path.is_empty() || keys.is_empty() {
            continue;
        }
        let header = match shape {
            Shape::ArrayOfTables => format!("[[{path}]]"),
            _ => format!("[{path}]"),
        };
        assert!(
            complete.contains(&header),
            "the complete example in docs/configuration.md has no {header}"
        );
    }
}

/// The GitHub anchor of a heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut set = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            set.insert(anchor(line.trim_start_matches('#')));
        }
    }
    set
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(repo().join("README.md"));
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            let target = &tail[..end];
            rest = &tail[end..];
            if target.starts_with("http") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            }
            if !fragment.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let target_text = std::fs::read_to_string(&resolved).unwrap();
                if !anchors(&target_text).contains(fragment) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
