//! Event-loop tokens: what each epoll registration stands for, and how it
//! is packed into epoll's 64-bit user data. Only this file knows the
//! layout: a kind in the top byte, the kind's fields below it.

/// What an epoll event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The exit signal's eventfd.
    Exit,
    /// The VMM's stdin, copied to the guest console.
    Stdin,
    /// A control-socket descriptor, numbered by the control server.
    Control(u32),
    /// The ioeventfd of queue `queue` of virtio device `slot`.
    QueueNotify { slot: u16, queue: u16 },
    /// A host-side descriptor (tap, vsock socket) that virtio device `slot`
    /// registered as `id` through its `DeviceEvents`.
    Device { slot: u16, id: u32 },
}

const KIND_SHIFT: u32 = 56;
const EXIT: u64 = 1;
const STDIN: u64 = 2;
const CONTROL: u64 = 3;
const QUEUE_NOTIFY: u64 = 4;
const DEVICE: u64 = 5;

impl From<Token> for u64 {
    fn from(token: Token) -> u64 {
        let (kind, fields) = match token {
            Token::Exit => (EXIT, 0),
            Token::Stdin => (STDIN, 0),
            Token::Control(id) => (CONTROL, u64::from(id)),
            Token::QueueNotify { slot, queue } => {
                (QUEUE_NOTIFY, u64::from(slot) << 16 | u64::from(queue))
            }
            Token::Device { slot, id } => (DEVICE, u64::from(slot) << 32 | u64::from(id)),
        };
        kind << KIND_SHIFT | fields
    }
}

impl Token {
    /// The token packed into `data`, or `None` for anything this file did
    /// not produce.
    pub fn decode(data: u64) -> Option<Token> {
        let fields = data & ((1 << KIND_SHIFT) - 1);
        let low16 = (fields & 0xffff) as u16;
        let token = match data >> KIND_SHIFT {
            EXIT if fields == 0 => Token::Exit,
            STDIN if fields == 0 => Token::Stdin,
            CONTROL => Token::Control(u32::try_from(fields).ok()?),
            QUEUE_NOTIFY => Token::QueueNotify {
                slot: u16::try_from(fields >> 16).ok()?,
                queue: low16,
            },
            DEVICE => Token::Device {
                slot: u16::try_from(fields >> 32).ok()?,
                id: (fields & 0xffff_ffff) as u32,
            },
            _ => return None,
        };
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_apart() {
        let tokens = [
            Token::Exit,
            Token::Stdin,
            Token::Control(0),
            Token::Control(u32::MAX),
            Token::QueueNotify { slot: 0, queue: 0 },
            Token::QueueNotify {
                slot: u16::MAX,
                queue: u16::MAX,
            },
            Token::Device { slot: 0, id: 0 },
            Token::Device {
                slot: u16::MAX,
                id: u32::MAX,
            },
            Token::Device { slot: 1, id: 0 },
            Token::Device { slot: 0, id: 1 },
        ];
        let mut seen = std::collections::HashSet::new();
        for token in tokens {
            let data = u64::from(token);
            assert_eq!(Token::decode(data), Some(token));
            assert!(seen.insert(data), "{token:?} collides");
        }
    }

    #[test]
    fn foreign_data_decodes_to_nothing() {
        for data in [0, u64::MAX, 6 << KIND_SHIFT, EXIT << KIND_SHIFT | 1] {
            assert_eq!(Token::decode(data), None, "{data:#x}");
        }
        assert_eq!(Token::decode(CONTROL << KIND_SHIFT | 1 << 32), None);
        assert_eq!(Token::decode(DEVICE << KIND_SHIFT | 1 << 48), None);
    }
}
