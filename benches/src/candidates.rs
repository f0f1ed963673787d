//! `queue-git`: how long the submit queue takes to build a candidate merge commit with real
//! git, beside `git merge` of the same two heads measured in the same run.
//!
//! The repository (generated once with `git fast-import` and cached in the system temp dir,
//! keyed by its parameters) has a main branch of N commits over M files, and two heads of
//! five commits each off main's tip, touching different files. Each round times:
//! - `build_candidate` (merge method) of main + [head 1, head 2] in a bare mirror: two
//!   merges and two commits, nothing checked out, the candidate kept under a ref;
//! - `build_candidate` of head 1 + [head 2]: the one merge `git merge` does, like for like;
//! - `git merge --no-edit <head 2>` in a worktree already checked out at head 1. The
//!   checkout is not timed, nor is the `git reset --hard` back to head 1 after each merge.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use envmgr::git::{CandidateBuild, ChangeToMerge, GitMirrors, MergeMethod};
use envmgr::names::{BranchName, CommitSha, RepoName};
use envmgr::RepoSettings;

use crate::{cores, stderr, summary};

/// Commits on each head, and files each of them touches.
const HEAD_COMMITS: usize = 5;
const FILES_PER_HEAD_COMMIT: usize = 20;
const LINES_PER_FILE: usize = 10;
/// Bump when the generated repository changes shape, so an old cache is not reused.
const LAYOUT_VERSION: u32 = 1;

pub fn queue_git(rounds: usize, commits: usize, files: usize) -> Result<()> {
    let touched = HEAD_COMMITS * FILES_PER_HEAD_COMMIT;
    ensure!(
        files > 2 * touched && commits >= 2,
        "use --files above {} (each head touches {touched} files of its own) and --commits of 2 or more",
        2 * touched
    );
    println!(
        "== queue-git: main of {commits} commits over {files} files, two heads of \
         {HEAD_COMMITS} commits touching {touched} different files each, {rounds} rounds, {} cores",
        cores()
    );
    let origin = generated_repository(commits, files)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    let repo = RepoSettings {
        channels: Vec::new(),
        name: RepoName::parse("bench")?,
        url: origin.display().to_string(),
        env_file: "compose.yml".into(),
        default_ttl: Duration::from_secs(3600),
        test_timeout: Duration::from_secs(3600),
        secret_env: vec![],
        credentials: None,
        queue: Default::default(),
        idle: Default::default(),
        max_envs: None,
    };
    let mirrors = GitMirrors::new(&work.path().join("data"));
    let start = Instant::now();
    let [main, one, two] = runtime.block_on(async {
        let mut heads = Vec::new();
        for branch in ["main", "one", "two"] {
            heads.push(
                mirrors
                    .fetch_branch(&repo, &BranchName::parse(branch)?)
                    .await?,
            );
        }
        anyhow::Ok(<[CommitSha; 3]>::try_from(heads).expect("three heads"))
    })?;
    let fetched = start.elapsed();

    let start = Instant::now();
    let worktree = work.path().join("worktree");
    git(
        work.path(),
        &["clone", "--quiet", path(&origin)?, path(&worktree)?],
    )?;
    git(
        &worktree,
        &["checkout", "--quiet", "-B", "bench", one.as_str()],
    )?;
    let checked_out = start.elapsed();
    println!(
        "setup, not timed: mirror fetch {:.2} s; clone and checkout of head 1 {:.2} s",
        fetched.as_secs_f64(),
        checked_out.as_secs_f64()
    );

    let build = |base: &CommitSha, heads: &[&CommitSha]| -> Result<(Duration, String)> {
        let changes: Vec<ChangeToMerge> = heads
            .iter()
            .map(|head| ChangeToMerge {
                head: (*head).clone(),
                title: format!("bench {}", head.short()),
            })
            .collect();
        let start = Instant::now();
        let built = runtime.block_on(mirrors.build_candidate(
            &repo.name,
            base,
            &changes,
            MergeMethod::Merge,
        ))?;
        let took = start.elapsed();
        match built {
            CandidateBuild::Built { tree, .. } => Ok((took, tree)),
            CandidateBuild::Conflict { change, files } => {
                bail!("the bench's heads conflict (change {change}: {files:?})")
            }
        }
    };
    let merge = || -> Result<(Duration, String)> {
        let start = Instant::now();
        git(&worktree, &["merge", "--quiet", "--no-edit", two.as_str()])?;
        let took = start.elapsed();
        let tree = git(&worktree, &["rev-parse", "HEAD^{tree}"])?;
        git(&worktree, &["reset", "--quiet", "--hard", one.as_str()])?;
        Ok((took, tree))
    };

    // Warm-up: both sides read the same objects once, so the page cache favours neither.
    let (_, candidate_tree) = build(&main, &[&one, &two])?;
    let (_, merged_tree) = merge()?;
    ensure!(
        candidate_tree == merged_tree,
        "the candidate's tree {candidate_tree} differs from git merge's {merged_tree}"
    );

    let (mut both, mut like, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first so drift on a shared machine hits both sides alike.
        let ours_first = round % 2 == 1;
        if !ours_first {
            theirs.push(merge()?.0);
        }
        both.push(build(&main, &[&one, &two])?.0);
        like.push(build(&one, &[&two])?.0);
        if ours_first {
            theirs.push(merge()?.0);
        }
        println!(
            "round {round}/{rounds}: build_candidate main+[1,2] {:>7.1} ms, 1+[2] {:>7.1} ms; \
             git merge {:>7.1} ms",
            ms(both[round - 1]),
            ms(like[round - 1]),
            ms(theirs[round - 1]),
        );
    }

    println!();
    println!(
        "candidate merge commit, {commits} commits, {files} files, {rounds} rounds, {} cores",
        cores()
    );
    println!("{:<58} {:>10} {:>10} {:>10}", "", "median", "min", "max");
    for (label, times) in [
        (
            "build_candidate (merge) main + [head 1, head 2], mirror",
            &both,
        ),
        ("build_candidate (merge) head 1 + [head 2], mirror", &like),
        ("git merge --no-edit head 2, worktree at head 1", &theirs),
    ] {
        let (median, min, max) = summary(times);
        println!(
            "{label:<58} {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            median * 1e3,
            min * 1e3,
            max * 1e3
        );
    }
    let reference = summary(&theirs).0;
    println!(
        "ratio build_candidate/git merge (medians): main+[1,2] {:.2}x, 1+[2] {:.2}x",
        summary(&both).0 / reference,
        summary(&like).0 / reference
    );
    println!("candidate tree = git merge's tree: yes ({candidate_tree})");
    println!("(git merge's checkout of head 1 and its reset after each round are not timed)");
    Ok(())
}

/// The bare repository for these parameters, generated on first use. It is built beside
/// its final place and renamed into it, so an interrupted generation is never reused.
fn generated_repository(commits: usize, files: usize) -> Result<PathBuf> {
    let cache = std::env::temp_dir().join(format!(
        "slipway-bench-queue-git-v{LAYOUT_VERSION}-{commits}c-{files}f"
    ));
    let origin = cache.join("origin.git");
    if origin.join("HEAD").exists() {
        println!("repository: cached in {}", cache.display());
        return Ok(origin);
    }
    let partial = std::env::temp_dir().join(format!(
        "slipway-bench-queue-git-partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let start = Instant::now();
    let bare = partial.join("origin.git");
    git(
        &partial,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            path(&bare)?,
        ],
    )?;
    let mut importer = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&bare)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("git fast-import runs")?;
    let mut stream = BufWriter::new(importer.stdin.take().expect("stdin is piped"));
    write_history(&mut stream, commits, files)?;
    drop(stream.into_inner()?); // end of input
    let out = importer.wait_with_output()?;
    if !out.status.success() {
        bail!("git fast-import: {}", stderr(&out));
    }
    std::fs::create_dir_all(&cache)?;
    std::fs::rename(&bare, &origin).context("moving the generated repository into the cache")?;
    let _ = std::fs::remove_dir_all(&partial);
    println!(
        "repository: generated in {:.1} s with git fast-import, cached in {}",
        start.elapsed().as_secs_f64(),
        cache.display()
    );
    Ok(origin)
}

/// A fast-import stream: main's first commit adds every file, each later one edits one file
/// (spread over the tree); then the two heads off main's tip, each commit editing its own
/// files (head 1 the first ones, head 2 the last ones).
fn write_history(out: &mut impl std::io::Write, commits: usize, files: usize) -> Result<()> {
    let mut history = Importer {
        out,
        versions: vec![0; files],
        time: 1_600_000_000,
    };
    let all: Vec<usize> = (0..files).collect();
    history.commit("main", 1, None, "initial", &all)?;
    // Edits land all over the tree (a prime stride), never on the files the heads touch,
    // so the heads merge cleanly.
    let touched = HEAD_COMMITS * FILES_PER_HEAD_COMMIT;
    let untouched: Vec<usize> = (touched..files - touched).collect();
    for n in 2..=commits {
        let file = untouched[(n * 7919) % untouched.len()];
        history.commit("main", n, None, &format!("change {n}"), &[file])?;
    }
    let mut mark = commits;
    for (branch, first_file) in [("one", 0), ("two", files - touched)] {
        for c in 0..HEAD_COMMITS {
            mark += 1;
            let from = (c == 0).then_some(commits); // main's tip
            let start = first_file + c * FILES_PER_HEAD_COMMIT;
            let edited: Vec<usize> = (start..start + FILES_PER_HEAD_COMMIT).collect();
            history.commit(branch, mark, from, &format!("{branch} {c}"), &edited)?;
        }
    }
    Ok(())
}

/// Writes commits in `git fast-import`'s format, files inline.
struct Importer<'a, W> {
    out: &'a mut W,
    /// How many times each file was edited: the next edit's contents.
    versions: Vec<usize>,
    time: u64,
}

impl<W: std::io::Write> Importer<'_, W> {
    /// A commit on `branch` (continuing it, or starting at mark `from`) editing `edited`.
    fn commit(
        &mut self,
        branch: &str,
        mark: usize,
        from: Option<usize>,
        message: &str,
        edited: &[usize],
    ) -> Result<()> {
        self.time += 60;
        let out = &mut *self.out;
        writeln!(out, "commit refs/heads/{branch}\nmark :{mark}")?;
        writeln!(
            out,
            "committer Bench <bench@example.com> {} +0000",
            self.time
        )?;
        writeln!(out, "data {}\n{message}", message.len())?;
        if let Some(from) = from {
            writeln!(out, "from :{from}")?;
        }
        for &file in edited {
            self.versions[file] += 1;
            let contents = file_contents(file, self.versions[file]);
            writeln!(out, "M 100644 inline {}", file_path(file))?;
            writeln!(out, "data {}\n{contents}", contents.len())?;
        }
        Ok(())
    }
}

/// 100 files per folder, in a few levels, as source trees are.
fn file_path(file: usize) -> String {
    format!(
        "src/m{:02}/d{:03}/f{file:05}.txt",
        file / 10_000,
        file / 100 % 100
    )
}

fn file_contents(file: usize, version: usize) -> String {
    (0..LINES_PER_FILE)
        .map(|line| {
            if line == version % LINES_PER_FILE {
                format!("file {file} line {line} version {version}\n")
            } else {
                format!("file {file} line {line}\n")
            }
        })
        .collect()
}

/// Runs git as a person at a terminal would (with a fixed identity); its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .context("git runs")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", stderr(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn path(path: &Path) -> Result<&str> {
    path.to_str().context("temp dir path is not UTF-8")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
