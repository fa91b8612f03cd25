//! Domain types shared by every layer: what a session, a message, an event, a task and an agent
//! are. Pure data: no I/O, no dependency on any other module of the crate, so the store, the
//! runtimes and the front ends can all speak the same language. It also holds the rules every
//! layer must agree on: a session's state machine (`Command`, `Transition`, the statuses and
//! phases), and which environment a sandbox gets (`env`).

#[macro_use]
mod enums;
mod agent;
mod ask;
mod command;
mod delta;
pub mod env;
mod event;
mod fleet;
mod message;
mod notice;
mod sandbox;
mod session;
mod task;
mod transition;

pub use agent::{AgentRecord, AgentSpec, HarnessKind, ModelPrice, Resources, ToolPolicy, ToolRule};
pub use ask::{Answer, Ask, AskKind, AskStatus, NewAsk, PermissionReply, permission_wants};
pub use command::Command;
pub use delta::LiveDelta;
pub use enums::{
    MessageRole, MessageStatus, NoticeKind, ParseEnumError, Phase, SessionStatus, TaskKind,
    TaskStatus,
};
pub use event::{Event, NewEvent};
pub use fleet::{CoreInfo, CoreKind, Fence};
pub use message::{
    FileDiff, Message, MessagePatch, NewMessage, Part, ToolStatus, TurnDiff, Usage,
    why_tools_stopped,
};
pub use notice::Notice;
pub use sandbox::{
    Condition, HealthChange, HealthPhase, LogOptions, PoolHealth, SandboxEvent, SandboxHealth,
    SandboxRef, ShellSpec,
};
pub use session::{
    BUDGET_WARN, Fork, NewSession, Session, SessionCreation, SessionPatch, SessionQuery,
    SessionUsage, TeamSpend, id_fragment, short_id, usd,
};
pub use task::{NewTask, Task, TaskQuery};
pub use transition::Transition;
