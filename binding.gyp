{
  # NODE_CRIU_LIBSOCCR=<dir> links an external libsoccr (<dir>/soccr.h or <dir>/soccr/soccr.h,
  # plus <dir>/libsoccr.a) instead of vendor/libsoccr. See vendor/libsoccr/README.md: CRIU's
  # libsoccr is GPLv2, so an addon built that way is GPLv2 as a whole.
  "variables": {
    "external_libsoccr%": "<!(node -p \"process.env.NODE_CRIU_LIBSOCCR || ''\")"
  },
  "targets": [
    {
      "target_name": "soccr",
      "type": "static_library",
      "sources": [
        "vendor/libsoccr/soccr.c",
        "vendor/libsoccr/soccr-dump.c",
        "vendor/libsoccr/soccr-restore.c",
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
          "include_dirs": ["<(external_libsoccr)", "<(external_libsoccr)/soccr"],
          "libraries": ["<(external_libsoccr)/libsoccr.a", "-lnet"],
          "defines": ["NODE_CRIU_EXTERNAL_LIBSOCCR=1"]
        }]
      ]
    }
  ]
}
