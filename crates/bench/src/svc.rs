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
    client.create_service(CreateServiceRequest { spec_json: serde_json::to_string(spec)? }).await?;
    Ok(())
}

pub async fn remove(client: &mut Client, name: &str) -> Result<()> {
    client.remove_service(RemoveServiceRequest { service: name.into() }).await?;
    Ok(())
}

pub async fn tasks(client: &mut Client, name: &str) -> Result<Vec<Task>> {
    let response =
        client.list_tasks(shoal_proto::v1::ListTasksRequest { service: name.to_string(), node: String::new() }).await?;
    response.into_inner().tasks_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}
