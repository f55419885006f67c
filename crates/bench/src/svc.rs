//! Small helpers over shoal's control API.

use anyhow::Result;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{CreateServiceRequest, GetServiceRequest, RemoveServiceRequest, UpdateServiceRequest};
use shoal_types::{Service, ServiceMode, ServiceSpec, Task};
use tonic::transport::Channel;

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

pub async fn get(client: &mut Client, name: &str) -> Result<Service> {
    let response = client.get_service(GetServiceRequest { service: name.into() }).await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

/// Sends `spec` as the service's new spec, with the version just read.
pub async fn update(client: &mut Client, name: &str, change: impl FnOnce(&mut ServiceSpec)) -> Result<()> {
    let current = get(client, name).await?;
    let mut spec = current.spec.clone();
    change(&mut spec);
    client
        .update_service(UpdateServiceRequest {
            service: name.into(),
            version: current.version,
            spec_json: serde_json::to_string(&spec)?,
            rollback: false,
        })
        .await?;
    Ok(())
}

/// Push-style rollback: the previous spec becomes current again, with the version just read.
pub async fn rollback(client: &mut Client, name: &str) -> Result<()> {
    let current = get(client, name).await?;
    client
        .update_service(UpdateServiceRequest {
            service: name.into(),
            version: current.version,
            spec_json: String::new(),
            rollback: true,
        })
        .await?;
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
