/** lib/sys/proc.ts's parsers, on texts as the kernel writes them (no /proc of another process needed). */
import {
  parseStatFields,
  parseStatus,
  parseTcpTable,
  procStat,
  procStatus,
  socketInode,
  STAT,
  stateLetter,
  statField,
  tcpStateName,
} from '../../../lib/sys/proc';

describe('parseStatFields', () => {
  it('numbers fields as proc(5) does, after the last ")" of a command name with spaces and parentheses', () => {
    const text = '1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 ' + Array(12).fill('0').join(' ') + ' 98765 rest\n';
    const fields = parseStatFields(text);
    expect(statField(fields, STAT.state)).toBe('S');
    expect(statField(fields, STAT.ppid)).toBe('1');
    expect(statField(fields, STAT.startTime)).toBe('98765');
    expect(fields[fields.length - 1]).toBe('rest');
  });

  it('reads this process', () => {
    const stat = procStat('self');
    expect(stat?.state).toMatch(/^[RS]$/);
    expect(stat?.startTime).toMatch(/^[0-9]+$/);
    expect(procStat(2 ** 22 + 1)).toBeUndefined();
  });
});

describe('parseStatus', () => {
  it('maps keys to trimmed values', () => {
    const status = parseStatus('Name:\tnode worker\nState:\tS (sleeping)\nTgid:\t42\nCapEff:\t000001ffffffffff\n');
    expect(status.get('Name')).toBe('node worker');
    expect(stateLetter(status)).toBe('S');
    expect(status.get('Tgid')).toBe('42');
    expect(status.get('CapEff')).toBe('000001ffffffffff');
  });

  it('reads this process', () => {
    expect(procStatus('self')?.get('Pid')).toBe(String(process.pid));
  });
});

describe('sockets', () => {
  it('socketInode reads fd link texts', () => {
    expect(socketInode('socket:[12345]')).toBe('12345');
    expect(socketInode('pipe:[12345]')).toBeUndefined();
    expect(socketInode('/dev/null')).toBeUndefined();
  });

  it('parseTcpTable reads /proc/net/tcp and tcp6 rows and skips the headers', () => {
    const text = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000 100 0 0 10 0',
      '   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000 20 4 30 10 -1',
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C41 06 00000000:00000000 03:00000A9B 00000000     0        0 0 3 0000',
      '',
    ].join('\n');
    expect(parseTcpTable(text)).toEqual([
      { local: '0100007F:1F90', remote: '00000000:0000', state: '0A', inode: '4242' },
      { local: '0100007F:9C40', remote: '0100007F:1F90', state: '01', inode: '4343' },
      {
        local: '00000000000000000000000001000000:1F90',
        remote: '00000000000000000000000001000000:9C41',
        state: '06',
        inode: '0',
      },
    ]);
  });

  it('tcpStateName names the states', () => {
    expect(tcpStateName('01')).toBe('ESTABLISHED');
    expect(tcpStateName('06')).toBe('TIME_WAIT');
    expect(tcpStateName('0A')).toBe('LISTEN');
    expect(tcpStateName('FF')).toBe('FF');
  });
});
