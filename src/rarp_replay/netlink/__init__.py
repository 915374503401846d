"""rtnetlink: a small struct-based codec (`codec`) and a thin socket adapter (`socket`)."""
