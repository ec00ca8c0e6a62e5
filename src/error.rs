//! Client-visible errors, one variant per ZooKeeper `KeeperException.Code` the server can send.

use std::fmt;

/// A ZooKeeper error code. `code()` is the exact integer sent in `ReplyHeader.err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZkError {
    SystemError,
    RuntimeInconsistency,
    DataInconsistency,
    ConnectionLoss,
    MarshallingError,
    Unimplemented,
    OperationTimeout,
    BadArguments,
    UnknownSession,
    NewConfigNoQuorum,
    ReconfigInProgress,
    ApiError,
    NoNode,
    NoAuth,
    BadVersion,
    NoChildrenForEphemerals,
    NodeExists,
    NotEmpty,
    SessionExpired,
    InvalidCallback,
    InvalidAcl,
    AuthFailed,
    SessionMoved,
    NotReadOnly,
    EphemeralOnLocalSession,
    NoWatcher,
    RequestTimeout,
    ReconfigDisabled,
    SessionClosedRequireSaslAuth,
    QuotaExceeded,
    ThrottledOp,
}

impl ZkError {
    pub const fn code(self) -> i32 {
        match self {
            ZkError::SystemError => -1,
            ZkError::RuntimeInconsistency => -2,
            ZkError::DataInconsistency => -3,
            ZkError::ConnectionLoss => -4,
            ZkError::MarshallingError => -5,
            ZkError::Unimplemented => -6,
            ZkError::OperationTimeout => -7,
            ZkError::BadArguments => -8,
            ZkError::UnknownSession => -12,
            ZkError::NewConfigNoQuorum => -13,
            ZkError::ReconfigInProgress => -14,
            ZkError::ApiError => -100,
            ZkError::NoNode => -101,
            ZkError::NoAuth => -102,
            ZkError::BadVersion => -103,
            ZkError::NoChildrenForEphemerals => -108,
            ZkError::NodeExists => -110,
            ZkError::NotEmpty => -111,
            ZkError::SessionExpired => -112,
            ZkError::InvalidCallback => -113,
            ZkError::InvalidAcl => -114,
            ZkError::AuthFailed => -115,
            ZkError::SessionMoved => -118,
            ZkError::NotReadOnly => -119,
            ZkError::EphemeralOnLocalSession => -120,
            ZkError::NoWatcher => -121,
            ZkError::RequestTimeout => -122,
            ZkError::ReconfigDisabled => -123,
            ZkError::SessionClosedRequireSaslAuth => -124,
            ZkError::QuotaExceeded => -125,
            ZkError::ThrottledOp => -127,
        }
    }

    pub fn from_code(code: i32) -> Option<ZkError> {
        ALL.iter().copied().find(|e| e.code() == code)
    }
}

const ALL: [ZkError; 31] = [
    ZkError::SystemError,
    ZkError::RuntimeInconsistency,
    ZkError::DataInconsistency,
    ZkError::ConnectionLoss,
    ZkError::MarshallingError,
    ZkError::Unimplemented,
    ZkError::OperationTimeout,
    ZkError::BadArguments,
    ZkError::UnknownSession,
    ZkError::NewConfigNoQuorum,
    ZkError::ReconfigInProgress,
    ZkError::ApiError,
    ZkError::NoNode,
    ZkError::NoAuth,
    ZkError::BadVersion,
    ZkError::NoChildrenForEphemerals,
    ZkError::NodeExists,
    ZkError::NotEmpty,
    ZkError::SessionExpired,
    ZkError::InvalidCallback,
    ZkError::InvalidAcl,
    ZkError::AuthFailed,
    ZkError::SessionMoved,
    ZkError::NotReadOnly,
    ZkError::EphemeralOnLocalSession,
    ZkError::NoWatcher,
    ZkError::RequestTimeout,
    ZkError::ReconfigDisabled,
    ZkError::SessionClosedRequireSaslAuth,
    ZkError::QuotaExceeded,
    ZkError::ThrottledOp,
];

impl fmt::Display for ZkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}

impl std::error::Error for ZkError {}

pub type ZkResult<T> = Result<T, ZkError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for e in ALL {
            assert_eq!(ZkError::from_code(e.code()), Some(e));
        }
        let mut codes: Vec<i32> = ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
    }

    #[test]
    fn well_known_codes_match_zookeeper() {
        assert_eq!(ZkError::NoNode.code(), -101);
        assert_eq!(ZkError::NodeExists.code(), -110);
        assert_eq!(ZkError::BadVersion.code(), -103);
        assert_eq!(ZkError::NoWatcher.code(), -121);
        assert_eq!(ZkError::ThrottledOp.code(), -127);
    }
}
