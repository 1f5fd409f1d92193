"""`station sim ...`: the simulators a person uses to try the daemon by hand (a CSMS to drive, a meter on a virtual
cable). They listen on loopback and on files under /tmp only; nothing here is part of the daemon."""
