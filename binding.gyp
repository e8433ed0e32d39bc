{
  # NODE_CRIU_LIBSOCCR=<dir> links an external libsoccr instead of vendor/libsoccr: <dir> is a
  # built CRIU tree (soccr/soccr.h, soccr/libsoccr.a, include/common/config.h) or a directory
  # with soccr.h + libsoccr.a. Resolved by vendor/libsoccr/external-libsoccr.js. CRIU's
  # libsoccr is GPLv2 and needs libnet: an addon built that way is GPLv2 as a whole and lacks
  # the node-criu extensions (see vendor/libsoccr/README.md).
  "variables": {
    "external_libsoccr%": "<!(node vendor/libsoccr/external-libsoccr.js dir)"
  },
  "targets": [
    {
      "target_name": "soccr",
      "type": "static_library",
      "sources": [
        "vendor/libsoccr/soccr.c",
        "vendor/libsoccr/soccr-dump.c",
        "vendor/libsoccr/soccr-restore.c",
        "vendor/libsoccr/soccr-bufs.c",
        "vendor/libsoccr/soccr-fin.c"
      ],
      "include_dirs": ["vendor/libsoccr"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-fPIC", "-fvisibility=hidden"],
      "direct_dependent_settings": {
        "include_dirs": ["vendor/libsoccr"]
      }
    },
    {
      "target_name": "node_criu",
      "sources": ["<!@(ls -1 csrc/*.cc)"],
      "include_dirs": ["csrc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "conditions": [
        ["external_libsoccr==''", {
          "dependencies": ["soccr"]
        }, {
          "include_dirs": ["<!@(node vendor/libsoccr/external-libsoccr.js includes)"],
          "libraries": ["<!(node vendor/libsoccr/external-libsoccr.js lib)", "-lnet"],
          "defines": ["NODE_CRIU_EXTERNAL_LIBSOCCR=1"]
        }]
      ]
    }
  ]
}
