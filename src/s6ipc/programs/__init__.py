"""One thin module per program: parse options, call the library, exec or serve.

``PROGRAMS`` maps each program name (the s6 name without ``s6-``) to its module. Every module
defines ``USAGE`` (the usage line after the program name) and ``main(reporter, args)``, which
never returns.
"""

PROGRAMS = {
    "ipcserver": "ipcserver",
    "ipcserver-socketbinder": "ipcserver_socketbinder",
    "applyuidgid": "applyuidgid",
    "ipcserverd": "ipcserverd",
    "ipcclient": "ipcclient",
    "ipcserver-access": "ipcserver_access",
    "accessrules-cdb-from-fs": "accessrules_cdb_from_fs",
    "accessrules-fs-from-cdb": "accessrules_fs_from_cdb",
    "systemd-socket": "systemd_socket",
    "sdnotify-bridge": "sdnotify_bridge",
    "fdholder-daemon": "fdholder_daemon",
    "fdholderd": "fdholderd",
    "fdholder-store": "fdholder_store",
    "fdholder-retrieve": "fdholder_retrieve",
    "fdholder-delete": "fdholder_delete",
    "fdholder-list": "fdholder_list",
    "fdholder-getdump": "fdholder_getdump",
    "fdholder-setdump": "fdholder_setdump",
    "fdholder-transferdump": "fdholder_transferdump",
    "status": "status",
}
