//! The real kubectl against three real masters: discovery, get/list/watch with selectors and
//! output formats, create/apply/replace/patch/scale/label/annotate/delete, namespace deletion,
//! describe, and the errors a user sees for bad input.

mod common;

use anyhow::Context;
use anyhow::Result;
use anyhow::ensure;
use common::Cluster;
use common::ok;
use tokio::io::AsyncBufReadExt;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox:1.36
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: solo
  labels: {app: solo}
spec:
  containers:
  - name: main
    image: nginx:1.25
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_manages_objects_on_a_three_master_cluster() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    cluster.kubeconfig().await?;
    let k = |args: &'static [&'static str]| cluster.kubectl(args);

    tracing_phase("--- discovery and the namespaces every cluster has");
    let namespaces = ok(k(&["get", "namespaces"]).await?)?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure!(namespaces.contains(ns), "missing namespace {ns}:\n{namespaces}");
    }
    ensure!(namespaces.contains("Active"), "STATUS column:\n{namespaces}");
    let resources = ok(k(&["api-resources"]).await?)?;
    ensure!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "api-resources:\n{resources}"
    );

    tracing_phase("--- create -f, get -o yaml shows defaults");
    let created = ok(cluster.kubectl_with_input(&["create", "-f", "-"], Some(DEPLOYMENT)).await?)?;
    ensure!(created.contains("deployment.apps/web created"), "{created}");
    let yaml = ok(k(&["get", "deploy", "web", "-o", "yaml"]).await?)?;
    for expected in [
        "replicas: 2",
        "type: RollingUpdate",
        "revisionHistoryLimit: 10",
        "uid:",
        "creationTimestamp:",
        "generation: 1",
    ] {
        ensure!(yaml.contains(expected), "missing {expected:?} in\n{yaml}");
    }
    let again = cluster.kubectl_with_input(&["create", "-f", "-"], Some(DEPLOYMENT)).await?;
    ensure!(
        stderr(&again).contains("AlreadyExists") && stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let table = ok(k(&["get", "deployments"]).await?)?;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    ensure!(table.contains("0/2"), "{table}");

    tracing_phase("--- scale, set image, label, annotate");
    ensure!(ok(k(&["scale", "deploy", "web", "--replicas=3"]).await?)?.contains("deployment.apps/web scaled"));
    ensure!(ok(k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).await?)? == "3");
    ensure!(ok(k(&["set", "image", "deploy/web", "web=nginx:1.27"]).await?)?.contains("image updated"));
    let images = ok(k(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].image}"]).await?)?;
    ensure!(images == "nginx:1.27 busybox:1.36", "set image keeps the other container: {images}");
    ensure!(ok(k(&["get", "deploy", "web", "-o", "jsonpath={.metadata.generation}"]).await?)? == "3");
    ok(k(&["label", "deploy", "web", "tier=front"]).await?)?;
    ensure!(ok(k(&["get", "deploy", "-l", "tier=front", "-o", "name"]).await?)?.trim() == "deployment.apps/web");
    ensure!(ok(k(&["get", "deploy", "-l", "tier=back", "-o", "name"]).await?)?.trim().is_empty());
    ok(k(&["label", "deploy", "web", "tier-"]).await?)?;
    ensure!(ok(k(&["get", "deploy", "-l", "tier", "-o", "name"]).await?)?.trim().is_empty());
    ok(k(&["annotate", "deploy", "web", "owner=team-a"]).await?)?;
    ensure!(ok(k(&["get", "deploy", "web", "-o", "jsonpath={.metadata.annotations.owner}"]).await?)? == "team-a");

    tracing_phase("--- patch: merge, json, strategic");
    ok(k(&["patch", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"minReadySeconds":5}}"#]).await?)?;
    ok(k(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#])
        .await?)?;
    ok(k(&[
        "patch",
        "deploy",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}}}"#,
    ])
    .await?)?;
    let spec = ok(k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.minReadySeconds} {.spec.replicas} {.spec.template.spec.containers[*].image}",
    ])
    .await?)?;
    ensure!(spec == "5 4 nginx:1.27 busybox:1.37", "{spec}");
    let bad_patch =
        k(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":9}]"#])
            .await?;
    ensure!(!bad_patch.status.success(), "a failing json patch test op is refused");

    tracing_phase("--- replace, and a stale replace gets Conflict");
    let json = ok(k(&["get", "deploy", "web", "-o", "json"]).await?)?;
    let mut object: serde_json::Value = serde_json::from_str(&json)?;
    object["spec"]["replicas"] = serde_json::json!(1);
    let replaced = ok(cluster.kubectl_with_input(&["replace", "-f", "-"], Some(&object.to_string())).await?)?;
    ensure!(replaced.contains("deployment.apps/web replaced"), "{replaced}");
    let stale = cluster.kubectl_with_input(&["replace", "-f", "-"], Some(&object.to_string())).await?;
    ensure!(
        stderr(&stale).contains("Conflict") && stderr(&stale).contains("the object has been modified"),
        "{}",
        stderr(&stale)
    );

    tracing_phase("--- apply twice (configured, unchanged) and server-side apply");
    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n";
    ensure!(
        ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(config_map)).await?)?
            .contains("configmap/settings created")
    );
    let changed = config_map.replace("fast", "safe");
    ensure!(
        ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&changed)).await?)?
            .contains("configmap/settings configured")
    );
    ensure!(
        ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&changed)).await?)?
            .contains("configmap/settings unchanged")
    );
    ensure!(ok(k(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"]).await?)? == "safe");
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - port: 80\n";
    let applied = ok(cluster.kubectl_with_input(&["apply", "--server-side", "-f", "-"], Some(service)).await?)?;
    ensure!(applied.contains("service/web serverside-applied"), "{applied}");
    let svc = ok(k(&["get", "svc", "web"]).await?)?;
    let row: Vec<&str> = svc.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    ensure!(row.len() >= 5 && row[1] == "NodePort" && row[2].starts_with("10."), "{svc}");
    ensure!(row[4].starts_with("80:3") && row[4].ends_with("/TCP"), "{svc}");

    tracing_phase("--- pods: -o wide, -A, field selectors, describe");
    ok(cluster.kubectl_with_input(&["create", "-f", "-"], Some(POD)).await?)?;
    let wide = ok(k(&["get", "pods", "-o", "wide"]).await?)?;
    let header: Vec<&str> = wide.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(header.starts_with(&["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]), "{wide}");
    ensure!(wide.contains("solo") && wide.contains("Pending") && wide.contains("0/1"), "{wide}");
    let all = ok(k(&["get", "pods", "-A"]).await?)?;
    ensure!(all.lines().next().unwrap_or_default().starts_with("NAMESPACE"), "{all}");
    ensure!(all.lines().any(|l| l.starts_with("default") && l.contains("solo")), "{all}");
    let by_field = ok(k(&["get", "pods", "--field-selector", "metadata.name=solo", "-o", "name"]).await?)?;
    ensure!(by_field.trim() == "pod/solo", "{by_field}");
    let none = ok(k(&["get", "pods", "--field-selector", "status.phase=Running", "-o", "name"]).await?)?;
    ensure!(none.trim().is_empty(), "{none}");
    let described = ok(k(&["describe", "deploy", "web"]).await?)?;
    ensure!(described.contains("Name:") && described.contains("web") && described.contains("Replicas:"), "{described}");
    let described = ok(k(&["describe", "pod", "solo"]).await?)?;
    ensure!(described.contains("nginx:1.25"), "{described}");

    tracing_phase("--- a replication controller, a kind served from one file: defaults, table, scale");
    let rc = concat!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n",
        "  template:\n    metadata:\n      labels: {app: legacy}\n    spec:\n      containers:\n",
        "      - name: web\n        image: nginx:1.27\n",
    );
    let created = ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(rc)).await?)?;
    ensure!(created.contains("replicationcontroller/legacy created"), "{created}");
    let table = ok(k(&["get", "rc"]).await?)?;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(header == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    ensure!(row.starts_with(&["legacy", "2", "0", "0"]), "{table}");
    let selector =
        ok(k(&["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app} {.metadata.labels.app}"]).await?)?;
    ensure!(selector == "legacy legacy", "the selector and labels default from the template: {selector}");
    ensure!(ok(k(&["scale", "rc", "legacy", "--replicas=3"]).await?)?.contains("replicationcontroller/legacy scaled"));
    ensure!(ok(k(&["get", "rc", "legacy", "-o", "jsonpath={.spec.replicas}"]).await?)? == "3");
    ok(k(&["delete", "rc", "legacy"]).await?)?;

    tracing_phase("--- bad input gets readable errors");
    let unknown = cluster
        .kubectl_with_input(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndatta: {}\n"),
        )
        .await?;
    ensure!(stderr(&unknown).contains("unknown field") && stderr(&unknown).contains("datta"), "{}", stderr(&unknown));
    let invalid = cluster
        .kubectl_with_input(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n"),
        )
        .await?;
    ensure!(
        stderr(&invalid).contains("is invalid") && stderr(&invalid).contains("metadata.name"),
        "{}",
        stderr(&invalid)
    );
    let no_image = POD.replace("    image: nginx:1.25\n", "").replace("solo", "noimage");
    let no_image = cluster.kubectl_with_input(&["create", "-f", "-"], Some(&no_image)).await?;
    ensure!(stderr(&no_image).contains("spec.containers[0].image: Required value"), "{}", stderr(&no_image));
    let kind = cluster
        .kubectl_with_input(&["create", "-f", "-"], Some("apiVersion: v1\nkind: Widget\nmetadata:\n  name: x\n"))
        .await?;
    // kubectl refuses a kind the server does not serve before sending it (its schema lookup
    // fails); the server would answer 400 (see the API server's tests).
    ensure!(!kind.status.success(), "{}", stderr(&kind));
    let missing = k(&["get", "pod", "nope"]).await?;
    ensure!(stderr(&missing).contains(r#"pods "nope" not found"#), "{}", stderr(&missing));

    tracing_phase("--- delete -f, and deleting a namespace deletes what is in it");
    let deleted = ok(cluster.kubectl_with_input(&["delete", "-f", "-"], Some(config_map)).await?)?;
    ensure!(deleted.contains("configmap \"settings\" deleted"), "{deleted}");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(namespace)).await?)?;
    ok(cluster
        .kubectl_with_input(
            &["apply", "-n", "team", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: inside\n"),
        )
        .await?)?;
    ok(cluster.kubectl_with_input(&["apply", "-n", "team", "-f", "-"], Some(POD)).await?)?;
    let gone = ok(k(&["delete", "namespace", "team", "--timeout=20s"]).await?)?;
    ensure!(gone.contains("namespace \"team\" deleted"), "{gone}");
    let after = k(&["get", "cm", "-n", "team", "-o", "name"]).await?;
    ensure!(String::from_utf8_lossy(&after.stdout).trim().is_empty(), "namespace contents remain");
    ensure!(!ok(k(&["get", "ns", "-o", "name"]).await?)?.contains("namespace/team"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_changes_from_another_master() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let kubeconfig = cluster.kubeconfig().await?;
    let mut watch = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(cluster.dir.path().join("watchcache"))
        .args(["get", "configmaps", "-w", "--context", "m1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().context("stdout")?).lines();
    // Give the watch time to start before the writes it must see (it starts from the list's
    // resourceVersion, so a write racing it is still seen, as ADDED in the list or the watch).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for name in ["one", "two"] {
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n");
        ok(cluster.kubectl_with_input(&["--context", "m2", "create", "-f", "-"], Some(&manifest)).await?)?;
    }
    let mut seen = Vec::new();
    while !(seen.iter().any(|l: &String| l.starts_with("one")) && seen.iter().any(|l: &String| l.starts_with("two"))) {
        let line = tokio::time::timeout(common::WAIT, lines.next_line()).await??.context("watch ended")?;
        seen.push(line);
    }
    let row: Vec<&str> =
        seen.iter().find(|l| l.starts_with("two")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    ensure!(row.len() == 3 && row[1] == "1", "watch rows are table rows (NAME DATA AGE): {seen:?}");
    watch.kill().await?;

    eprintln!("--- a watch from a compacted resourceVersion ends with an ERROR event: 410 Expired");
    let put: serde_json::Value =
        serde_json::from_str(&ok(cluster.etcdctl(&["put", "/unrelated", "x", "-w", "json"]).await?)?)?;
    let revision = put["header"]["revision"].as_i64().context("revision")?;
    ok(cluster.etcdctl(&["compaction", &revision.to_string()]).await?)?;
    let path = "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2&timeoutSeconds=2";
    let raw = ok(cluster.kubectl(&["get", "--raw", path]).await?)?;
    let event: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap_or_default())?;
    ensure!(event["type"] == "ERROR" && event["object"]["code"] == 410, "{raw}");
    ensure!(event["object"]["reason"] == "Expired", "{raw}");
    // kubectl itself relists and watches again from the newest state.
    let list = ok(cluster.kubectl(&["get", "configmaps", "-o", "name"]).await?)?;
    ensure!(list.contains("configmap/one") && list.contains("configmap/two"), "{list}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_admin_token_are_unauthorized_except_health_and_version() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    cluster.kubeconfig().await?;
    let denied = cluster.kubectl(&["--token", "not-the-token", "get", "pods"]).await?;
    ensure!(stderr(&denied).contains("You must be logged in to the server"), "{}", stderr(&denied));
    for open in ["/livez", "/readyz", "/healthz"] {
        let out = ok(cluster.kubectl(&["--token", "not-the-token", "get", "--raw", open]).await?)?;
        ensure!(out.trim() == "ok", "{open}: {out}");
    }
    let version = ok(cluster.kubectl(&["--token", "not-the-token", "get", "--raw", "/version"]).await?)?;
    let version: serde_json::Value = serde_json::from_str(&version)?;
    ensure!(version["major"] == "1" && version["minor"] == "33", "{version}");
    ensure!(ok(cluster.kubectl(&["auth", "can-i", "delete", "pods"]).await?)?.trim() == "yes");

    eprintln!("--- a service account's token (TokenRequest) authenticates until the account goes");
    let account = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: robot\n";
    ok(cluster.kubectl_with_input(&["apply", "-f", "-"], Some(account)).await?)?;
    let token = ok(cluster.kubectl(&["create", "token", "robot"]).await?)?.trim().to_string();
    ensure!(token.split('.').count() == 3, "a JWT: {token}");
    let listed = ok(cluster.kubectl(&["--token", &token, "get", "serviceaccounts", "-o", "name"]).await?)?;
    ensure!(listed.contains("serviceaccount/robot"), "{listed}");
    ok(cluster.kubectl(&["delete", "serviceaccount", "robot"]).await?)?;
    let refused = cluster.kubectl(&["--token", &token, "get", "pods"]).await?;
    ensure!(stderr(&refused).contains("You must be logged in"), "{}", stderr(&refused));
    Ok(())
}

fn tracing_phase(phase: &str) {
    eprintln!("{phase}");
}
