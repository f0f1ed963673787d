//! The built-in demo: a tiny app image built locally (nothing is pulled) and a
//! throwaway git repository whose branches Slipway can turn into environments.
//!
//! The app is compose/demo/app/main.rs, compiled to a static binary by build.rs and
//! embedded here; the repository content comes from compose/demo.yml and
//! compose/demo/web/Dockerfile, so `docker-compose -f compose/demo.yml` and the demo
//! repo always describe the same environment.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use envmgr::names::ServiceName;
use envmgr::runtime::docker::DockerRuntime;
use envmgr::runtime::{BuildContext, BuildRequest, ImageSource, Runtime};
use sha2::{Digest, Sha256};

/// Tag of the base image every demo service uses.
pub const DEMO_IMAGE: &str = "slipway/demo-app:latest";

/// The statically linked demo binary (see build.rs).
pub const DEMO_APP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-app"));

/// Image label holding [`demo_image_content_label`], so a changed binary or Dockerfile
/// is noticed and the image rebuilt.
pub const CONTENT_LABEL: &str = "dev.slipway.content";

/// Dockerfile of [`DEMO_IMAGE`], without its content label (added by `dockerfile()`).
/// `WORKDIR /tmp` creates /tmp, which scratch lacks, so the app's `/tmp/unhealthy`
/// knob can be used with `docker cp`.
const DOCKERFILE: &str = r#"FROM scratch
COPY demo-app /demo-app
WORKDIR /tmp
ENTRYPOINT ["/demo-app"]
CMD ["serve"]
"#;

const COMPOSE: &str = include_str!("../../compose/demo.yml");
const WEB_DOCKERFILE: &str = include_str!("../../compose/demo/web/Dockerfile");

/// Tar archive (a Docker build context) for [`DEMO_IMAGE`]: `Dockerfile` and `demo-app`.
pub fn demo_image_context() -> Result<Vec<u8>> {
    let dockerfile = dockerfile();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("demo-app", DEMO_APP, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0); // fixed, so identical contexts stay byte-identical
        tar.append_data(&mut header, path, data)
            .with_context(|| format!("adding {path} to the demo image context"))?;
    }
    tar.into_inner().context("finishing the demo image context")
}

/// Short content hash of the demo image inputs, for the [`CONTENT_LABEL`] label.
pub fn demo_image_content_label() -> String {
    let digest = Sha256::new()
        .chain_update(DOCKERFILE)
        .chain_update(DEMO_APP)
        .finalize();
    hex::encode(digest)[..16].to_string()
}

/// The Dockerfile carries its own label too, so an image built by hand from
/// [`demo_image_context`] (`docker build - < ctx.tar`) is recognised as current.
fn dockerfile() -> String {
    format!(
        "{DOCKERFILE}LABEL {CONTENT_LABEL}=\"{}\"\n",
        demo_image_content_label()
    )
}

/// Creates the demo git repository at `dir` unless it already is a git repository:
/// branch `main` holds `compose.yml` and `web/Dockerfile`; branch `feature-x` adds one
/// commit that changes the web greeting. The repository is assembled in a temporary
/// directory next to `dir` and renamed into place, so a crash never leaves half of it.
pub fn ensure_demo_repo(dir: &Path) -> Result<()> {
    if is_git_repo(dir) {
        return Ok(());
    }
    if dir.exists() {
        // rename() can only replace an empty directory; refuse to clobber anything else.
        let mut entries =
            fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} exists and is not a git repository", dir.display());
        }
        fs::remove_dir(dir).with_context(|| format!("removing empty {}", dir.display()))?;
    }
    let tmp = temp_sibling(dir)?;
    let result = build_demo_repo(&tmp).and_then(|()| {
        fs::rename(&tmp, dir).with_context(|| format!("moving the demo repo to {}", dir.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        // Losing a race against another process creating the same repo is fine.
        if is_git_repo(dir) {
            return Ok(());
        }
    }
    result
}

fn is_git_repo(dir: &Path) -> bool {
    dir.join(".git").exists()
}

/// A new, empty, uniquely named directory next to `dir` (same filesystem, so the
/// final rename is atomic).
fn temp_sibling(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("bad demo repo path {}", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tmp = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

fn build_demo_repo(repo: &Path) -> Result<()> {
    // compose/demo.yml lives next to the demo/ folder; in the repo, web/ is at the root.
    let compose = replace_once(COMPOSE, "context: demo/web", "context: web")?;
    let feature_dockerfile =
        replace_once(WEB_DOCKERFILE, "hello from main", "hello from feature-x")?;

    git(repo, &["init", "-q"])?;
    fs::create_dir(repo.join("web"))?;
    fs::write(repo.join("compose.yml"), compose)?;
    fs::write(repo.join("web/Dockerfile"), WEB_DOCKERFILE)?;
    git(repo, &["add", "compose.yml", "web/Dockerfile"])?;
    git(
        repo,
        &["commit", "-q", "-m", "Add the Slipway demo environment"],
    )?;

    git(repo, &["checkout", "-q", "-b", "feature-x"])?;
    fs::write(repo.join("web/Dockerfile"), feature_dockerfile)?;
    git(repo, &["commit", "-q", "-a", "-m", "Greet from feature-x"])?;
    git(repo, &["checkout", "-q", "main"])
}

/// Replaces `from` (which must occur exactly once) so drift in the compose/ files
/// fails loudly instead of producing a subtly wrong demo repo.
fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    if text.matches(from).count() != 1 {
        bail!("expected exactly one {from:?} in the demo files");
    }
    Ok(text.replacen(from, to, 1))
}

/// Runs `git -C repo ARGS` isolated from user and system config (hooks, signing,
/// templates), with a fixed identity and date so commit ids are reproducible.
fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Slipway Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@slipway.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Slipway Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@slipway.invalid")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .context("running git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Log line written whenever the demo image is checked or built (tests look for it).
const DEMO_IMAGE_LOG: &str = "preparing the bundled demo image";

/// Builds the demo app image when it is missing or stale (its content label differs).
/// Cheap when it is current: one image lookup.
pub async fn ensure_demo_image(runtime: &dyn Runtime) -> Result<()> {
    tracing::info!(image = DEMO_IMAGE, "{DEMO_IMAGE_LOG}");
    let request = BuildRequest {
        service: ServiceName::parse("demo-app")?,
        tag: DEMO_IMAGE.to_string(),
        dockerfile: "Dockerfile".into(),
        context: BuildContext::bytes(demo_image_context()?),
        args: Default::default(),
        target: None,
        // Set by the demo Dockerfile itself: a stale image (older binary) is rebuilt.
        required_labels: [(CONTENT_LABEL.to_string(), demo_image_content_label())].into(),
    };
    runtime
        .prepare_image(&ImageSource::Build(request), Arc::new(|_| {}))
        .await?;
    Ok(())
}

/// `slipway demo-image`: builds the bundled demo image without starting a server.
pub async fn build_demo_image() -> Result<()> {
    let runtime = DockerRuntime::connect("demo-image").await.context(
        "building the demo image needs a running Docker engine; start it or set DOCKER_HOST",
    )?;
    ensure_demo_image(&runtime)
        .await
        .context("cannot prepare the demo image")?;
    eprintln!("{DEMO_IMAGE} is ready");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_out(repo: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn creates_main_and_feature_branches() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("nested/demo");
        ensure_demo_repo(&repo).unwrap();

        assert_eq!(git_out(&repo, &["branch", "--show-current"]).trim(), "main");
        let compose = git_out(&repo, &["show", "main:compose.yml"]);
        assert!(compose.contains("context: web\n"), "{compose}");
        let main_web = git_out(&repo, &["show", "main:web/Dockerfile"]);
        assert!(main_web.contains("hello from main"));
        let feature_web = git_out(&repo, &["show", "feature-x:web/Dockerfile"]);
        assert!(feature_web.contains("hello from feature-x"));
        // feature-x is exactly one commit on top of main, touching only the Dockerfile.
        let ahead = git_out(&repo, &["rev-list", "--count", "main..feature-x"]);
        assert_eq!(ahead.trim(), "1");
        let changed = git_out(&repo, &["diff", "--name-only", "main", "feature-x"]);
        assert_eq!(changed.trim(), "web/Dockerfile");
        // Clean tree, and no temporary directory left behind.
        assert_eq!(git_out(&repo, &["status", "--porcelain"]), "");
        let siblings: Vec<_> = fs::read_dir(repo.parent().unwrap()).unwrap().collect();
        assert_eq!(siblings.len(), 1);
    }

    #[test]
    fn is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("demo");
        ensure_demo_repo(&repo).unwrap();
        let head = git_out(&repo, &["rev-parse", "main", "feature-x"]);
        fs::write(repo.join("marker"), "kept").unwrap();

        ensure_demo_repo(&repo).unwrap();
        assert_eq!(git_out(&repo, &["rev-parse", "main", "feature-x"]), head);
        assert!(repo.join("marker").exists(), "existing repo was recreated");
    }

    #[test]
    fn fills_an_empty_dir_but_not_a_foreign_one() {
        let root = tempfile::tempdir().unwrap();
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        ensure_demo_repo(&empty).unwrap();
        assert!(is_git_repo(&empty));

        let foreign = root.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("notes.txt"), "mine").unwrap();
        assert!(ensure_demo_repo(&foreign).is_err());
        assert_eq!(
            fs::read_to_string(foreign.join("notes.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn image_context_holds_dockerfile_and_executable() {
        let ctx = demo_image_context().unwrap();
        let mut archive = tar::Archive::new(ctx.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            seen.push((path, entry.header().mode().unwrap(), entry.size()));
        }
        assert_eq!(
            seen,
            [
                ("Dockerfile".to_string(), 0o644, dockerfile().len() as u64),
                ("demo-app".to_string(), 0o755, DEMO_APP.len() as u64),
            ]
        );
        assert!(DEMO_APP.starts_with(b"\x7fELF"));
        assert!(dockerfile().contains(&demo_image_content_label()));
    }

    #[test]
    fn content_label_is_short_hex() {
        let label = demo_image_content_label();
        assert_eq!(label.len(), 16);
        assert!(label.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
