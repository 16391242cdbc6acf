"""Running untrusted code: bubblewrap namespaces and mounts (``sandbox``), rlimits, cgroups and
a tmpfs per command (``limits``), and preloaded starts forked from a zygote (``preload``)."""
