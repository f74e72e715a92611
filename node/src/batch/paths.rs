//! Files on the node's disk that a batch submission may name. Only under the directories of
//! `batch.paths` (none by default), resolved through symbolic links; an input must be a
//! regular file (not a device or a pipe, which never end) no larger than the upload limit;
//! an output never the input itself.

use std::path::{Path, PathBuf};

use crate::serve::error::ApiError;

/// Whether `path` (canonical) lies under one of `roots`.
fn inside(roots: &[PathBuf], path: &Path) -> bool {
    roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|root| path.starts_with(root))
}

fn no_roots(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "this node {what} no files on its disk (batch.paths is empty): upload the input and fetch the result"
    ))
}

fn outside(raw: &str, roots: &[PathBuf]) -> ApiError {
    ApiError::bad_request(format!("{raw:?} is not under this node's batch.paths {roots:?}"))
}

/// The input file `raw` names: absolute, under `roots`, a regular file of at most `max_bytes`.
pub fn input_file(roots: &[PathBuf], raw: &str, max_bytes: u64) -> Result<PathBuf, ApiError> {
    if roots.is_empty() {
        return Err(no_roots("reads"));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(ApiError::bad_request(format!("input {raw:?} must be an absolute path on the node")));
    }
    let canonical = std::fs::canonicalize(path)
        .map_err(|e| ApiError::bad_request(format!("cannot read the input {raw:?}: {e}")))?;
    if !inside(roots, &canonical) {
        return Err(outside(raw, roots));
    }
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| ApiError::bad_request(format!("cannot read the input {raw:?}: {e}")))?;
    if !meta.is_file() {
        return Err(ApiError::bad_request(format!("input {raw:?} is not a regular file")));
    }
    if meta.len() > max_bytes {
        return Err(ApiError::too_large(format!(
            "input {raw:?} has {} bytes, more than this node's batch.max_upload_bytes ({max_bytes})",
            meta.len()
        )));
    }
    Ok(canonical)
}

/// The output file `raw` names: absolute, in an existing directory under `roots` (and, when
/// it exists, itself under them and not the `input`), and creatable or writable now.
pub fn output_file(roots: &[PathBuf], raw: &str, input: &Path) -> Result<PathBuf, ApiError> {
    let refuse = |why: String| ApiError::bad_request(format!("output {raw:?} cannot be written: {why}"));
    if roots.is_empty() {
        return Err(no_roots("writes"));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(refuse("it must be an absolute path on the node".into()));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refuse("it names no file".into()));
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| refuse(format!("its directory: {e}")))?;
    let target = parent.join(name);
    if !inside(roots, &target) {
        return Err(outside(raw, roots));
    }
    // Written through no link (a dangling one would create a file anywhere), and not the input
    // by another name (a hard link).
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if meta.file_type().is_symlink() {
            return Err(refuse("it is a symbolic link".into()));
        }
        if meta.is_dir() {
            return Err(refuse("it is a directory".into()));
        }
        if std::fs::metadata(input).is_ok_and(|i| same_file(&i, &meta)) {
            return Err(refuse("it is the input file".into()));
        }
    }
    let existed = target.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&target)
        .map_err(|e| refuse(e.to_string()))?;
    if !existed {
        let _ = std::fs::remove_file(&target);
    }
    Ok(target)
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// When a job runs (it may have waited in the queue): its node-path input is still a regular
/// file under `roots` (nothing swapped a link or a device in since the submit).
pub fn recheck_input(roots: &[PathBuf], input: &Path, max_bytes: u64) -> Result<(), String> {
    let raw = input.to_str().ok_or("the input path is not UTF-8")?;
    input_file(roots, raw, max_bytes).map(|_| ()).map_err(|e| e.message)
}

/// When a job writes its output: a path of the node's own (under `own`), or one under `roots`
/// that is not a symbolic link.
pub fn recheck_output(roots: &[PathBuf], own: &Path, output: &Path) -> Result<(), String> {
    if output.starts_with(own) {
        return Ok(());
    }
    if std::fs::symlink_metadata(output).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!("the output {} became a symbolic link", output.display()));
    }
    let parent = output.parent().and_then(|p| std::fs::canonicalize(p).ok());
    match parent {
        Some(dir) if inside(roots, &dir) => Ok(()),
        _ => Err(format!("the output {} is no longer under batch.paths", output.display())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_regular_files_under_the_roots_and_never_the_input_as_output() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("batch");
        std::fs::create_dir(&root).unwrap();
        let roots = vec![root.clone()];
        let input = root.join("rows.csv");
        std::fs::write(&input, "a\n1\n").unwrap();
        let raw = |p: &Path| p.to_str().unwrap().to_string();
        assert_eq!(
            input_file(&roots, &raw(&input), 1 << 20).unwrap(),
            std::fs::canonicalize(&input).unwrap()
        );
        // Outside the roots, directly or through a link; not a regular file; too big; relative.
        let secret = dir.path().join("secret.csv");
        std::fs::write(&secret, "a\n1\n").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("link.csv")).unwrap();
        for bad in [raw(&secret), raw(&root.join("link.csv")), "/dev/zero".into(), "rows.csv".into()] {
            assert!(input_file(&roots, &bad, 1 << 20).is_err(), "{bad}");
        }
        assert!(input_file(&[PathBuf::from("/")], "/dev/zero", 1 << 20)
            .unwrap_err()
            .message
            .contains("regular"));
        assert_eq!(input_file(&roots, &raw(&input), 2).unwrap_err().status.as_u16(), 413);
        assert!(input_file(&[], &raw(&input), 1 << 20).unwrap_err().message.contains("batch.paths"));
        // Outputs.
        let out = root.join("out.csv");
        assert_eq!(
            output_file(&roots, &raw(&out), &input).unwrap(),
            std::fs::canonicalize(&root).unwrap().join("out.csv")
        );
        assert!(!out.exists(), "the check leaves no file behind");
        for bad in [
            raw(&input),
            raw(&secret),
            raw(&root.join("link.csv")),
            raw(&root.join("no/such.csv")),
            raw(&root),
        ] {
            assert!(output_file(&roots, &bad, &input).is_err(), "{bad}");
        }
        // A dangling link would create a file outside; a hard link is the input by another name.
        let outside_file = dir.path().join("created-outside.csv");
        std::os::unix::fs::symlink(&outside_file, root.join("dangling.csv")).unwrap();
        std::fs::hard_link(&input, root.join("same.csv")).unwrap();
        for (bad, why) in [("dangling.csv", "symbolic link"), ("same.csv", "the input file")] {
            let err = output_file(&roots, &raw(&root.join(bad)), &input).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {}", err.message);
        }
        assert!(!outside_file.exists());
        // At run time: a path swapped for a link or a device since the submit is refused.
        let own = dir.path().join("data/batch");
        assert!(recheck_output(&roots, &own, &root.join("dangling.csv")).is_err());
        assert!(recheck_output(&roots, &own, &own.join("job/output.csv")).is_ok());
        assert!(recheck_input(&roots, &input, 1 << 20).is_ok());
        std::fs::remove_file(&input).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &input).unwrap();
        assert!(recheck_input(&roots, &input, 1 << 20).is_err());
    }
}
