//! Image resolution: what program a container of an image runs, with which arguments and where.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::runtime::{ContainerSpec, RuntimeError};

/// The built-in images (programs of the helper, `<helper> image NAME`), by normalized name.
const BUILTINS: &[(&str, &str)] = &[
    ("hashicorp/http-echo", "http-echo"),
    ("nginx", "nginx"),
    ("registry.k8s.io/pause", "pause"),
    ("k8s.gcr.io/pause", "pause"),
];

/// Images whose containers run the host's own commands (a shell by default).
const HOST_IMAGES: &[&str] = &["busybox", "alpine", "debian", "ubuntu"];

/// The PATH a container gets when its environment has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// An absolute path to an executable file.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The image's own working directory (a directory image), if any.
    pub image_dir: Option<PathBuf>,
    /// What `kubectl describe` shows as the image id.
    pub image_id: String,
}

/// What an image provides before the pod spec's `command` and `args` are applied.
enum Image {
    /// `--image NAME=FILE`: the file is the entrypoint.
    Executable(PathBuf),
    /// `--image NAME=DIR`: the directory is the working directory; no entrypoint.
    Directory(PathBuf),
    /// `<helper> image NAME`.
    Builtin(&'static str),
    /// The host's commands, `sh` by default.
    Host,
}

/// `nginx`, `nginx:1.27`, `docker.io/library/nginx:latest` and `nginx@sha256:...` are all
/// `nginx`; other registries are kept (`registry.k8s.io/pause:3.10` is `registry.k8s.io/pause`).
pub(crate) fn normalize(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _digest)| name);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let image = match image[last_slash..].rfind(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    let image = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|registry| image.strip_prefix(registry))
        .unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image)
}

fn find_image(images: &BTreeMap<String, PathBuf>, image: &str) -> Result<Image, RuntimeError> {
    let mapped = images
        .get(image)
        .or_else(|| images.iter().find(|(name, _)| normalize(name) == normalize(image)).map(|(_, p)| p));
    if let Some(path) = mapped {
        return Ok(if path.is_dir() { Image::Directory(path.clone()) } else { Image::Executable(path.clone()) });
    }
    let name = normalize(image);
    if let Some((_, builtin)) = BUILTINS.iter().find(|(known, _)| *known == name) {
        return Ok(Image::Builtin(builtin));
    }
    if HOST_IMAGES.contains(&name) {
        return Ok(Image::Host);
    }
    Err(RuntimeError::ImageNotFound {
        image: image.to_string(),
        reason: format!(
            "the process runtime runs local programs only: map the image to an executable or a directory \
             with --image {name}=PATH"
        ),
    })
}

/// Resolves what a container runs, with Kubernetes' semantics: `command` replaces the image's
/// entrypoint, `args` replace its default arguments (and a `command` alone drops them too).
/// `path` is the container's PATH, to look commands up in.
pub(crate) fn resolve(
    images: &BTreeMap<String, PathBuf>,
    helper: &[OsString],
    spec: &ContainerSpec,
    path: &str,
) -> Result<Resolved, RuntimeError> {
    let image = find_image(images, &spec.image)?;
    let (entrypoint, default_args, image_dir): (Vec<OsString>, Vec<OsString>, Option<PathBuf>) = match &image {
        Image::Executable(file) => (vec![file.clone().into_os_string()], vec![], None),
        Image::Directory(dir) => (vec![], vec![], Some(dir.clone())),
        Image::Builtin(name) => {
            let mut entrypoint = helper.to_vec();
            entrypoint.extend(["image".into(), (*name).into()]);
            (entrypoint, vec![], None)
        }
        Image::Host => (vec![], vec!["sh".into()], None),
    };
    let args: Vec<OsString> = spec.args.iter().map(OsString::from).collect();
    let mut argv: Vec<OsString> = if spec.command.is_empty() {
        let mut argv = entrypoint;
        argv.extend(if args.is_empty() { default_args } else { args });
        argv
    } else {
        spec.command.iter().map(OsString::from).chain(args).collect()
    };
    if argv.is_empty() {
        return Err(RuntimeError::StartFailed(format!(
            "image {:?} has no entrypoint: the container needs a command",
            spec.image
        )));
    }
    let first = argv.remove(0);
    let program = find_program(Path::new(&first), image_dir.as_deref(), path).ok_or_else(|| {
        RuntimeError::StartFailed(format!("exec: {:?}: executable file not found in $PATH", first.to_string_lossy()))
    })?;
    let image_id = match &image {
        Image::Executable(file) => file.display().to_string(),
        Image::Directory(dir) => dir.display().to_string(),
        Image::Builtin(name) => {
            format!("{} image {name}", helper.first().map(|h| h.to_string_lossy()).unwrap_or_default())
        }
        Image::Host => program.display().to_string(),
    };
    Ok(Resolved { program, args: argv, image_dir, image_id })
}

/// Looks a program up: a path with a slash as it is (relative to the image's directory), a
/// bare name in the image's directory and then on PATH.
fn find_program(name: &Path, image_dir: Option<&Path>, path: &str) -> Option<PathBuf> {
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.components().count() > 1 || name.is_absolute() {
        let candidate = match image_dir {
            Some(dir) if name.is_relative() => dir.join(name),
            _ => name.to_path_buf(),
        };
        return is_executable(&candidate).then(|| absolute(candidate));
    }
    image_dir
        .into_iter()
        .map(Path::to_path_buf)
        .chain(std::env::split_paths(path))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .map(absolute)
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str, command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: "c".to_string(),
            image: image.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            limits: Default::default(),
            mounts: vec![],
            attempt: 0,
        }
    }

    #[test]
    fn image_names_lose_their_tag_digest_and_docker_hub_prefix() {
        assert_eq!(normalize("nginx"), "nginx");
        assert_eq!(normalize("nginx:1.27"), "nginx");
        assert_eq!(normalize("docker.io/library/nginx:latest"), "nginx");
        assert_eq!(normalize("hashicorp/http-echo@sha256:abc"), "hashicorp/http-echo");
        assert_eq!(normalize("registry.k8s.io/pause:3.10"), "registry.k8s.io/pause");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_replace_the_defaults() {
        let helper = vec![OsString::from("/bin/true")];
        let none = BTreeMap::new();
        let shell = resolve(&none, &helper, &spec("busybox", &[], &[]), DEFAULT_PATH).unwrap_or_else(|e| panic!("{e}"));
        assert!(shell.program.ends_with("sh") && shell.args.is_empty(), "{shell:?}");
        let echo = resolve(&none, &helper, &spec("busybox:1.36", &[], &["echo", "hi"]), DEFAULT_PATH)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(echo.program.ends_with("echo") && echo.args == ["hi"], "{echo:?}");
        let builtin = resolve(&none, &helper, &spec("hashicorp/http-echo", &[], &["-text=x"]), DEFAULT_PATH)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(builtin.program, PathBuf::from("/bin/true"));
        assert_eq!(builtin.args, ["image", "http-echo", "-text=x"]);
        let replaced =
            resolve(&none, &helper, &spec("nginx", &["sleep"], &["1"]), DEFAULT_PATH).unwrap_or_else(|e| panic!("{e}"));
        assert!(replaced.program.ends_with("sleep") && replaced.args == ["1"], "{replaced:?}");
    }

    #[test]
    fn an_unmapped_image_tells_the_operator_how_to_map_it() {
        let err = resolve(&BTreeMap::new(), &[], &spec("example.com/app:v1", &[], &[]), DEFAULT_PATH);
        match err {
            Err(RuntimeError::ImageNotFound { reason, .. }) => assert!(reason.contains("--image"), "{reason}"),
            other => panic!("expected ImageNotFound, got {other:?}"),
        }
    }
}
