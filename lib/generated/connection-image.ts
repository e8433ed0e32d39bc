// Generated from proto/connection-image.proto by `npm run generate:proto`. Do not edit.

export declare namespace nodecriu {

    namespace image {

        namespace Endpoint {
            interface $Properties {
                address: Uint8Array;
                port: number;
                scopeId?: (number|null);
                $unknowns?: Uint8Array[];
            }
            type $Shape = nodecriu.image.Endpoint.$Properties;
        }

        namespace SkData {
            interface $Properties {
                state: number;
                inqLen: number;
                inqSeq: number;
                outqLen: number;
                outqSeq: number;
                unsqLen: number;
                optMask: number;
                mssClamp: number;
                sndWscale: number;
                rcvWscale: number;
                timestamp: number;
                flags: number;
                sndWl1: number;
                sndWnd: number;
                maxWindow: number;
                rcvWnd: number;
                rcvWup: number;
                $unknowns?: Uint8Array[];
            }
            type $Shape = nodecriu.image.SkData.$Properties;
        }

        namespace NftablesLockRef {
            interface $Properties {
                table: string;
                netns?: (string|null);
                $unknowns?: Uint8Array[];
            }
            type $Shape = nodecriu.image.NftablesLockRef.$Properties;
        }

        namespace ConnectionImage {
            interface $Properties {
                version: number;
                family: number;
                local: nodecriu.image.Endpoint.$Properties;
                remote: nodecriu.image.Endpoint.$Properties;
                skData: nodecriu.image.SkData.$Properties;
                recvQueue: Uint8Array;
                sendQueue: Uint8Array;
                pendingRead?: (Uint8Array|null);
                lock?: (nodecriu.image.NftablesLockRef.$Properties|null);
                $unknowns?: Uint8Array[];
            }
            type $Shape = nodecriu.image.ConnectionImage.$Properties;
        }
    }
}
