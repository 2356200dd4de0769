//! The control plane starts under leadership and keeps its Leases.

mod common;

use anyhow::Result;
use common::TestControlPlane;
use common::rt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_holds_the_scheduler_and_controller_manager_leases() -> Result<()> {
    let cp = TestControlPlane::start().await?;
    let leases = rt("coordination.k8s.io", "leases");
    cp.eventually("both leases name the holder", || async {
        let mut held = 0;
        for name in ["kube-scheduler", "kube-controller-manager"] {
            if let Ok(lease) = cp.get(leases, Some("kube-system"), name).await {
                held += usize::from(lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()));
            }
        }
        Ok(held == 2)
    })
    .await?;
    cp.shutdown().await;
    Ok(())
}
