//! kubectl's imperative `create` commands against three real masters. kubectl sends these
//! objects as Kubernetes protobuf (`application/vnd.kubernetes.protobuf`), not JSON, so this
//! exercises the API server's protobuf decoding end to end.

mod common;

use anyhow::Result;
use anyhow::ensure;
use common::Cluster;
use common::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_commands_send_protobuf_and_the_objects_read_back() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    cluster.kubeconfig().await?;

    ok(cluster.kubectl(&["create", "namespace", "team"]).await?)?;
    let phase = ok(cluster.kubectl(&["get", "namespace", "team", "-o", "jsonpath={.status.phase}"]).await?)?;
    ensure!(phase == "Active", "namespace phase: {phase:?}");

    // -v=8 logs the request headers: proof that the body really went as protobuf.
    let out = cluster
        .kubectl(&["create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", "team", "-v=8"])
        .await?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out)?;
    ensure!(log.contains("Content-Type: application/vnd.kubernetes.protobuf"), "kubectl did not send protobuf: {log}");
    let deployment = ok(cluster
        .kubectl(&[
            "get",
            "deployment",
            "web",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.metadata.labels.app} \
             {.spec.template.spec.containers[0].name} {.spec.template.spec.containers[0].image}",
        ])
        .await?)?;
    ensure!(deployment == "2 web web nginx nginx", "deployment: {deployment:?}");

    ok(cluster.kubectl(&["create", "configmap", "c", "--from-literal=a=b"]).await?)?;
    let data = ok(cluster.kubectl(&["get", "configmap", "c", "-o", "jsonpath={.data.a}"]).await?)?;
    ensure!(data == "b", "configmap data: {data:?}");

    ok(cluster.kubectl(&["create", "secret", "generic", "s", "--from-literal=a=b"]).await?)?;
    let secret = ok(cluster.kubectl(&["get", "secret", "s", "-o", "jsonpath={.type} {.data.a}"]).await?)?;
    ensure!(secret == "Opaque Yg==", "secret: {secret:?}");

    ok(cluster.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"]).await?)?;
    let service = ok(cluster
        .kubectl(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.ports[0].protocol} \
             {.spec.selector.app}",
        ])
        .await?)?;
    ensure!(service == "ClusterIP 80 8080 TCP web", "service: {service:?}");
    let cluster_ip = ok(cluster.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]).await?)?;
    ensure!(cluster_ip.parse::<std::net::IpAddr>().is_ok(), "service clusterIP: {cluster_ip:?}");

    ok(cluster.kubectl(&["create", "serviceaccount", "robot"]).await?)?;
    let account = ok(cluster.kubectl(&["get", "serviceaccount", "robot", "-o", "jsonpath={.metadata.name}"]).await?)?;
    ensure!(account == "robot", "service account: {account:?}");
    Ok(())
}
