"""Scale-out: a front process relaying signaling to worker processes (`sfu serve --workers N`)."""
