// Generated from proto/criu-rpc.proto by `npm run generate:proto`. Do not edit.

export declare namespace criu_page_server_info {
    interface $Properties {
        address?: (string|null);
        port?: (number|null);
        pid?: (number|null);
        fd?: (number|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_page_server_info.$Properties;
}

export declare namespace criu_veth_pair {
    interface $Properties {
        ifIn: string;
        ifOut: string;
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_veth_pair.$Properties;
}

export declare namespace ext_mount_map {
    interface $Properties {
        key: string;
        val: string;
        $unknowns?: Uint8Array[];
    }
    type $Shape = ext_mount_map.$Properties;
}

export declare namespace join_namespace {
    interface $Properties {
        ns: string;
        nsFile: string;
        extraOpt?: (string|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = join_namespace.$Properties;
}

export declare namespace inherit_fd {
    interface $Properties {
        key: string;
        fd: number;
        $unknowns?: Uint8Array[];
    }
    type $Shape = inherit_fd.$Properties;
}

export declare namespace cgroup_root {
    interface $Properties {
        ctrl?: (string|null);
        path: string;
        $unknowns?: Uint8Array[];
    }
    type $Shape = cgroup_root.$Properties;
}

export declare namespace unix_sk {
    interface $Properties {
        inode: number;
        $unknowns?: Uint8Array[];
    }
    type $Shape = unix_sk.$Properties;
}

export enum criu_cg_mode {
    IGNORE = 0,
    CG_NONE = 1,
    PROPS = 2,
    SOFT = 3,
    FULL = 4,
    STRICT = 5,
    DEFAULT = 6
}

export enum criu_network_lock_method {
    IPTABLES = 1,
    NFTABLES = 2,
    SKIP = 3
}

export enum criu_pre_dump_mode {
    SPLICE = 1,
    VM_READ = 2
}

export enum criu_image_io_mode {
    IMAGE_IO_WRITEBACK = 0,
    IMAGE_IO_DIRECT = 1
}

export declare namespace criu_opts {
    interface $Properties {
        imagesDirFd: number;
        pid?: (number|null);
        leaveRunning?: (boolean|null);
        extUnixSk?: (boolean|null);
        tcpEstablished?: (boolean|null);
        evasiveDevices?: (boolean|null);
        shellJob?: (boolean|null);
        fileLocks?: (boolean|null);
        logLevel?: (number|null);
        logFile?: (string|null);
        ps?: (criu_page_server_info.$Properties|null);
        notifyScripts?: (boolean|null);
        root?: (string|null);
        parentImg?: (string|null);
        trackMem?: (boolean|null);
        autoDedup?: (boolean|null);
        workDirFd?: (number|null);
        linkRemap?: (boolean|null);
        veths?: (criu_veth_pair.$Properties[]|null);
        cpuCap?: (number|null);
        forceIrmap?: (boolean|null);
        execCmd?: (string[]|null);
        extMnt?: (ext_mount_map.$Properties[]|null);
        manageCgroups?: (boolean|null);
        cgRoot?: (cgroup_root.$Properties[]|null);
        rstSibling?: (boolean|null);
        inheritFd?: (inherit_fd.$Properties[]|null);
        autoExtMnt?: (boolean|null);
        extSharing?: (boolean|null);
        extMasters?: (boolean|null);
        skipMnt?: (string[]|null);
        enableFs?: (string[]|null);
        unixSkIno?: (unix_sk.$Properties[]|null);
        manageCgroupsMode?: (criu_cg_mode|null);
        ghostLimit?: (number|null);
        irmapScanPaths?: (string[]|null);
        external?: (string[]|null);
        emptyNs?: (number|null);
        joinNs?: (join_namespace.$Properties[]|null);
        cgroupProps?: (string|null);
        cgroupPropsFile?: (string|null);
        cgroupDumpController?: (string[]|null);
        freezeCgroup?: (string|null);
        timeout?: (number|null);
        tcpSkipInFlight?: (boolean|null);
        weakSysctls?: (boolean|null);
        lazyPages?: (boolean|null);
        statusFd?: (number|null);
        orphanPtsMaster?: (boolean|null);
        configFile?: (string|null);
        tcpClose?: (boolean|null);
        lsmProfile?: (string|null);
        tlsCacert?: (string|null);
        tlsCacrl?: (string|null);
        tlsCert?: (string|null);
        tlsKey?: (string|null);
        tls?: (boolean|null);
        tlsNoCnVerify?: (boolean|null);
        cgroupYard?: (string|null);
        preDumpMode?: (criu_pre_dump_mode|null);
        pidfdStoreSk?: (number|null);
        lsmMountContext?: (string|null);
        networkLock?: (criu_network_lock_method|null);
        mntnsCompatMode?: (boolean|null);
        skipFileRwxCheck?: (boolean|null);
        unprivileged?: (boolean|null);
        imagesDir?: (string|null);
        leaveStopped?: (boolean|null);
        displayStats?: (boolean|null);
        logToStderr?: (boolean|null);
        imageIoMode?: (criu_image_io_mode|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_opts.$Properties;
}

export declare namespace criu_dump_resp {
    interface $Properties {
        restored?: (boolean|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_dump_resp.$Properties;
}

export declare namespace criu_restore_resp {
    interface $Properties {
        pid: number;
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_restore_resp.$Properties;
}

export declare namespace criu_notify {
    interface $Properties {
        script?: (string|null);
        pid?: (number|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_notify.$Properties;
}

export enum criu_req_type {
    EMPTY = 0,
    DUMP = 1,
    RESTORE = 2,
    CHECK = 3,
    PRE_DUMP = 4,
    PAGE_SERVER = 5,
    NOTIFY = 6,
    CPUINFO_DUMP = 7,
    CPUINFO_CHECK = 8,
    FEATURE_CHECK = 9,
    VERSION = 10,
    WAIT_PID = 11,
    PAGE_SERVER_CHLD = 12,
    SINGLE_PRE_DUMP = 13
}

export declare namespace criu_features {
    interface $Properties {
        memTrack?: (boolean|null);
        lazyPages?: (boolean|null);
        pidfdStore?: (boolean|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_features.$Properties;
}

export declare namespace criu_req {
    interface $Properties {
        type: criu_req_type;
        opts?: (criu_opts.$Properties|null);
        notifySuccess?: (boolean|null);
        keepOpen?: (boolean|null);
        features?: (criu_features.$Properties|null);
        pid?: (number|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_req.$Properties;
}

export declare namespace criu_resp {
    interface $Properties {
        type: criu_req_type;
        success: boolean;
        dump?: (criu_dump_resp.$Properties|null);
        restore?: (criu_restore_resp.$Properties|null);
        notify?: (criu_notify.$Properties|null);
        ps?: (criu_page_server_info.$Properties|null);
        crErrno?: (number|null);
        features?: (criu_features.$Properties|null);
        crErrmsg?: (string|null);
        version?: (criu_version.$Properties|null);
        status?: (number|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_resp.$Properties;
}

export declare namespace criu_version {
    interface $Properties {
        majorNumber: number;
        minorNumber: number;
        gitid?: (string|null);
        sublevel?: (number|null);
        extra?: (number|null);
        name?: (string|null);
        $unknowns?: Uint8Array[];
    }
    type $Shape = criu_version.$Properties;
}
