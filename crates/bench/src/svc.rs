//! Small helpers over shoal's control API.

use anyhow::Result;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{CreateServiceRequest, RemoveServiceRequest};
use shoal_types::{ServiceMode, ServiceSpec, Task};
use tonic::transport::Channel;

pub use shoal_tests::{get_service as get, rollback_service as rollback, update_service as update};

pub type Client = ControlClient<Channel>;

/// Label shoal's executor puts on a service's containers.
pub fn label(service: &str) -> String {
    format!("org.shoal.service.name={service}")
}

pub fn replicated(name: &str, image: &str, replicas: usize) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas: replicas as u64 };
    spec
}

pub async fn create(client: &mut Client, spec: &ServiceSpec) -> Result<()> {
    client
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(spec)?, ..Default::default() })
        .await?;
    Ok(())
}

pub async fn remove(client: &mut Client, name: &str) -> Result<()> {
    client.remove_service(RemoveServiceRequest { service: name.into() }).await?;
    Ok(())
}

/// Creates `services` services of `replicas` replicas named `{prefix}-{i}`, one after another,
/// each once the previous one's tasks are stored (on a cluster without agents they all stay
/// pending). Fails with the manager's log if the store does not get there within `timeout`.
pub async fn fill(
    cluster: &shoal_tests::Cluster,
    client: &mut Client,
    prefix: &str,
    services: usize,
    replicas: usize,
    timeout: std::time::Duration,
) -> Result<()> {
    let addr = &cluster.managers[0].addr;
    let started = tokio::time::Instant::now();
    let already = shoal_tests::cluster_info(addr).await?.tasks;
    for i in 0..services {
        create(client, &replicated(&format!("{prefix}-{i}"), crate::engine::IMAGE_V1, replicas)).await?;
        let want = already + (i + 1) * replicas;
        loop {
            let info = shoal_tests::cluster_info(addr).await?;
            if info.tasks >= want {
                break;
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "the store holds {} tasks instead of {want} after {timeout:?}; log:\n{}",
                    info.tasks,
                    cluster.managers[0].log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

pub async fn tasks(client: &mut Client, name: &str) -> Result<Vec<Task>> {
    let response = client
        .list_tasks(shoal_proto::v1::ListTasksRequest { service: name.to_string(), ..Default::default() })
        .await?;
    response.into_inner().tasks_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}
