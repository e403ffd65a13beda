//! `leadership completions <shell>` and `leadership man` from the built binary: they print to
//! standard output without a server, and `man --out-dir` writes one page per subcommand. (What
//! the scripts and pages contain is checked in `src/manual.rs`.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_leadership");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run leadership")
}

#[test]
fn completions_print_for_bash_zsh_and_fish_and_refuse_an_unknown_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("release") && script.contains("watch"),
            "{shell}"
        );
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(64), "a bad argument is EX_USAGE");
}

#[test]
fn the_man_page_prints_and_the_pages_go_into_a_directory() {
    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains(".TH leadership 1"));
    let dir = std::env::temp_dir().join(format!("leadership-man-e2e-{}", std::process::id()));
    let out = run(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "leadership-completions.1",
            "leadership-man.1",
            "leadership-release.1",
            "leadership-run.1",
            "leadership-status.1",
            "leadership-watch.1",
            "leadership.1"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
