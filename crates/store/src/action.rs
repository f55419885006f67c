use serde::{Deserialize, Serialize};
use shoal_types::{
    Cluster, ClusterSecurity, ClusterSpec, Node, NodeDescription, NodeRole, NodeSpec, NodeStatus, ServiceSpec,
    StartGate, Task, TaskState, TaskStatus, Timestamp, UpdateStatus,
};

/// One raft log entry's worth of changes, applied all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Wall-clock time at the proposing leader; becomes created_at/updated_at.
    pub at: Timestamp,
    pub actions: Vec<Action>,
    /// Who asked for the change and why: recorded with the revisions it makes. Empty for the
    /// control loop's and the agents' writes.
    #[serde(default, skip_serializing_if = "Origin::is_empty")]
    pub origin: Origin,
}

impl Batch {
    /// A batch of no particular origin (the control loop's, the dispatcher's).
    pub fn new(at: Timestamp, actions: Vec<Action>) -> Batch {
        Batch { at, actions, origin: Origin::default() }
    }
}

/// Who made a change (a certificate identity, `role:node-id`) and why (`--change-cause`, or the
/// command line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    /// The caller's id for the rollout this spec change starts (`--rollout-id`); empty: the
    /// store names it `<service>-<revision>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_id: String,
}

impl Origin {
    pub fn is_empty(&self) -> bool {
        self.by.is_empty() && self.cause.is_empty() && self.rollout_id.is_empty()
    }
}

/// Defines [`Action`] from one list of variants: the enum itself, serialised internally tagged
/// (`{"action": "update_service", "id": ..}`, the raft log's format), and a twin of it tagged
/// externally, which its deserialiser reads into once it has the tag.
macro_rules! actions {
    ($( $(#[$variant_meta:meta])* $variant:ident { $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)? } ),* $(,)?) => {
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(rename_all = "snake_case", tag = "action")]
        pub enum Action {
            $( $(#[$variant_meta])* $variant { $( $(#[$field_meta])* $field: $ty ),* } ),*
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum TaggedAction {
            $( $variant { $( $(#[$field_meta])* $field: $ty ),* } ),*
        }

        impl From<TaggedAction> for Action {
            fn from(action: TaggedAction) -> Action {
                match action {
                    $( TaggedAction::$variant { $( $field ),* } => Action::$variant { $( $field ),* } ),*
                }
            }
        }
    };
}

actions! {
    /// Creates the cluster object; refused if one exists.
    InitCluster {
        cluster: Cluster,
    },
    /// Stores the cluster CA and the first join tokens; refused if they exist (the CA never
    /// changes, or every node certificate would stop verifying).
    InitSecurity {
        security: ClusterSecurity,
    },
    /// `cluster update`: replaces the cluster's settings if it is still at `expected_version`.
    UpdateCluster {
        expected_version: u64,
        spec: ClusterSpec,
    },
    /// `cluster join-token --rotate`: replaces one role's token; nodes that joined keep working.
    SetJoinToken {
        role: NodeRole,
        token: String,
    },
    CreateService {
        id: String,
        spec: ServiceSpec,
    },
    /// `route create`; refused if the name or the port is taken.
    CreateRoute {
        route: shoal_types::traffic::Route,
    },
    /// `route update`: a new spec for a route still at `expected_version`.
    UpdateRoute {
        id: String,
        expected_version: u64,
        spec: shoal_types::traffic::RouteSpec,
    },
    /// `route rm`.
    RemoveRoute {
        id: String,
    },
    /// `secret create` / `config create`; refused if the name is taken for its kind.
    CreateData {
        object: shoal_types::DataObject,
    },
    /// `secret rm` / `config rm`; refused while a service (or its previous spec) uses it.
    RemoveData {
        id: String,
    },
    /// Replaces the spec if the service is still at `expected_version` (optimistic concurrency).
    UpdateService {
        id: String,
        expected_version: u64,
        spec: ServiceSpec,
    },
    /// Push-style rollback: swaps spec and previous spec.
    RollbackService {
        id: String,
        expected_version: u64,
    },
    /// Rollback to a kept revision: its spec becomes current as a new revision and what was
    /// current becomes the previous spec, so a plain rollback afterwards toggles back.
    RollbackServiceTo {
        id: String,
        expected_version: u64,
        revision: u64,
    },
    /// `stack rollback`: `spec` (the service's spec in an earlier stack revision) becomes current
    /// as a new revision, rolled out with the rollback settings, like `RollbackServiceTo`.
    RollbackServiceToSpec {
        id: String,
        expected_version: u64,
        spec: ServiceSpec,
        message: String,
    },
    SetUpdateStatus {
        id: String,
        status: Option<UpdateStatus>,
    },
    /// `rollout pause`: an update (or rollback) in progress starts no new slot until resumed.
    /// Refused unless one is in progress.
    PauseRollout {
        id: String,
    },
    /// `rollout resume`: a paused update (or rollback) carries on. Refused unless one is paused.
    ResumeRollout {
        id: String,
    },
    /// `rollout approve`: a canary update waiting for approval at the end of a step moves on to
    /// the next step. Refused unless a step waits for approval.
    ApproveRollout {
        id: String,
    },
    /// `rollout abort`: an update in progress or paused stops and the service rolls back to the
    /// spec it had before (push-style, with `rollback_config`). Refused unless an update (not a
    /// rollback) is in progress or paused.
    AbortRollout {
        id: String,
    },
    /// The updater's automatic rollback: the previous spec becomes current (as a new version)
    /// and is forgotten, so a later manual rollback has nothing to return to (Swarm). Skipped
    /// if the service changed since `expected_version` or has no previous spec.
    AutoRollback {
        id: String,
        expected_version: u64,
        status: UpdateStatus,
    },
    RemoveService {
        id: String,
    },
    /// `stack deploy` and `stack rollback`: records the stack's next revision from its services
    /// as the earlier actions of the entry left them. Refused if the stack's newest revision is
    /// no longer `expected_revision` (another deploy came first). With `group`, the services the
    /// entry changed roll out as one group.
    RecordStack {
        stack: String,
        expected_revision: u64,
        digest: String,
        removed: Vec<String>,
        group: Option<shoal_types::stack::GroupPlan>,
    },
    /// A group rollout's progress, as the control loop saw it: a member completed (or failed,
    /// in a group that does not roll back), or finished rolling back. Skipped if the group or
    /// the member moved on.
    SetGroupMember {
        stack: String,
        revision: u64,
        service_id: String,
        state: shoal_types::stack::MemberState,
    },
    /// A member of an atomic group failed, or the group ran out of time: every member goes
    /// back to its spec from before the deploy and those the deploy created are removed, all in
    /// this entry. Skipped unless the group is updating.
    FailGroup {
        stack: String,
        revision: u64,
        service_id: String,
        task_id: String,
        message: String,
    },
    PutNode {
        node: Node,
    },
    /// Replaces a node's availability and labels if it is still at `expected_version`; the role
    /// only changes through raft membership (demotion).
    UpdateNodeSpec {
        id: String,
        expected_version: u64,
        spec: NodeSpec,
    },
    RemoveNode {
        id: String,
    },
    PutTask {
        task: Task,
    },
    RemoveTask {
        id: String,
    },
    // The actions below are proposed by the leader's control loops from a view that may be a
    // little behind the log. They never fail a batch: a task that is gone, or a change that would
    // move a state backwards, is skipped.
    /// Raises a task's desired state (never lowers it).
    SetDesiredState {
        id: String,
        desired: TaskState,
    },
    /// The updater's shutdown of a task its rollout replaced: desired SHUTDOWN (never lowered),
    /// and with `remove_container` its container is to be removed once stopped.
    RetireTask {
        id: String,
        remove_container: bool,
    },
    /// A task prepared ahead of its slot's turn (`--update-prepare-ahead`) gets its turn: its
    /// gate becomes `gate` (typically "after the old task stopped"), or with none it is to run
    /// now. The slot is recorded in the rollout from here, not from when it was prepared. If the
    /// task is no longer prepared and waiting (it failed since the updater looked), `otherwise`
    /// (a new task for the slot) is put instead, so the slot still gets its replacement.
    ReleaseTask {
        id: String,
        gate: Option<StartGate>,
        otherwise: Task,
    },
    /// `--update-old-tasks keep`: a task the rollout replaced keeps running, outside the replicas.
    KeepTask {
        id: String,
    },
    /// `rollout finish`: every kept task of the service is shut down and its container removed.
    /// Refused when the service has none.
    FinishRollout {
        id: String,
    },
    /// An observed status from an agent; applied only if it moves forward (or, at the same state,
    /// differs).
    SetTaskStatus {
        id: String,
        status: TaskStatus,
    },
    /// The scheduler's decision: bind an unassigned task (or confirm a preassigned one) to a node.
    AssignTask {
        id: String,
        node_id: String,
    },
    /// The scheduler could not place the task: PENDING with the reason.
    MarkUnschedulable {
        id: String,
        err: String,
    },
    /// Deletes tasks that still exist (the task reaper).
    DeleteTasks {
        ids: Vec<String>,
    },
    /// Node health and description as the dispatcher sees them.
    SetNodeStatus {
        id: String,
        status: NodeStatus,
        description: Option<NodeDescription>,
    },
}

/// Every entry is decoded on every manager, so `Action` is read tag first: serde's derive for an
/// internally tagged enum copies each action into a generic buffer before decoding it again
/// (several microseconds for a service spec). Our serialiser always writes the tag first; an
/// action from elsewhere with the tag later takes the buffered path.
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ActionVisitor)
    }
}

struct ActionVisitor;

impl<'de> serde::de::Visitor<'de> for ActionVisitor {
    type Value = Action;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an action: a map with an \"action\" tag")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Action, A::Error> {
        use serde::de::Error;
        let Some(first) = map.next_key::<String>()? else { return Err(A::Error::missing_field("action")) };
        if first == "action" {
            let tag: String = map.next_value()?;
            return TaggedAction::deserialize(AfterTag { tag, map }).map(Action::from);
        }
        let mut fields = serde_json::Map::new();
        fields.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            fields.insert(key, value);
        }
        let tag = match fields.remove("action") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(other) => return Err(A::Error::custom(format!("action: {other} is not a string"))),
            None => return Err(A::Error::missing_field("action")),
        };
        let tagged = serde_json::Value::Object(serde_json::Map::from_iter([(tag, serde_json::Value::Object(fields))]));
        TaggedAction::deserialize(tagged).map(Action::from).map_err(A::Error::custom)
    }
}

/// The rest of an action's map once its tag is read, presented as an externally tagged enum
/// whose variant is the tag and whose fields are the map's remaining entries.
struct AfterTag<A> {
    tag: String,
    map: A,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::Deserializer<'de> for AfterTag<A> {
    type Error = A::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::EnumAccess<'de> for AfterTag<A> {
    type Error = A::Error;
    type Variant = Fields<A>;

    fn variant_seed<S: serde::de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Fields<A>), A::Error> {
        use serde::de::IntoDeserializer;
        let variant = seed.deserialize(self.tag.into_deserializer())?;
        Ok((variant, Fields(self.map)))
    }
}

/// An action's fields: the entries after its tag.
struct Fields<A>(A);

impl<'de, A: serde::de::MapAccess<'de>> serde::de::VariantAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        Ok(())
    }

    fn newtype_variant_seed<S: serde::de::DeserializeSeed<'de>>(self, _seed: S) -> Result<S::Value, A::Error> {
        Err(serde::de::Error::custom("every action has named fields"))
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, A::Error> {
        Err(serde::de::Error::custom("every action has named fields"))
    }

    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipKind {
    AddLearner,
    Promote,
    Remove,
}

/// A raft membership change as the store sees it (decoded from the conf change context).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub kind: MembershipKind,
    pub raft_id: u64,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub at: Timestamp,
}
