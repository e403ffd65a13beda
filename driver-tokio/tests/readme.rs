//! The README's Rust code compiles: every `rust` block of `README.md` stands, line for line
//! (indented as a whole or not), in `driver-tokio/examples/readme.rs`, which `cargo test`
//! builds. A block edited in one place and not the other fails here, naming it.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `rust` blocks of a Markdown text, each with the line it starts on.
fn rust_blocks(markdown: &str) -> Vec<(usize, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```rust") => current = Some((i + 1, Vec::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, lines)), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Whether `block` stands in `code` at some indentation, line for line.
fn contains(code: &[&str], block: &[&str]) -> bool {
    code.windows(block.len()).any(|window| {
        let first = window[0];
        let indent = &first[..first.len() - first.trim_start().len()];
        window.iter().zip(block).all(|(have, want)| {
            if want.trim().is_empty() {
                have.trim().is_empty()
            } else {
                have.strip_prefix(indent) == Some(want)
            }
        })
    })
}

#[test]
fn every_rust_block_of_the_readme_is_in_the_compiled_example() {
    let readme = read("README.md");
    let example = read("driver-tokio/examples/readme.rs");
    let code: Vec<&str> = example.lines().collect();
    let blocks = rust_blocks(&readme);
    assert!(blocks.len() >= 3, "README's rust blocks: {}", blocks.len());
    for (line, block) in &blocks {
        assert!(
            contains(&code, block),
            "README.md line {line}: this block is not in driver-tokio/examples/readme.rs \
             (copy it there, so that it compiles):\n{}",
            block.join("\n")
        );
    }
}

#[test]
fn the_check_finds_a_changed_line() {
    let code = ["fn f() {", "    let a = 1;", "    a", "}"];
    assert!(contains(&code, &["let a = 1;", "a"]));
    assert!(!contains(&code, &["let a = 2;", "a"]));
    assert!(!contains(&code, &["let a = 1;", "  a"]));
}
