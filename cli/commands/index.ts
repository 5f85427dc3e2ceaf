// Every command class of the CLI, in the order help lists them.

import { BrokerCommand } from './BrokerCommand.js';
import { CompletionCommand } from './CompletionCommand.js';
import { GatewayCommand } from './GatewayCommand.js';
import { KeygenCommand } from './KeygenCommand.js';
import { ShellCommand } from './ShellCommand.js';
import { TunnelDiagnoseCommand } from './TunnelDiagnoseCommand.js';
import { TunnelHistoryCommand } from './TunnelHistoryCommand.js';
import { TunnelListCommand } from './TunnelListCommand.js';
import { TunnelMachineCommand } from './TunnelMachineCommand.js';
import { TunnelReplayCommand } from './TunnelReplayCommand.js';
import { TunnelStartCommand } from './TunnelStartCommand.js';
import { TunnelStopCommand } from './TunnelStopCommand.js';

export const commandClasses = [
  TunnelStartCommand,
  TunnelListCommand,
  TunnelStopCommand,
  TunnelHistoryCommand,
  TunnelDiagnoseCommand,
  TunnelReplayCommand,
  TunnelMachineCommand,
  GatewayCommand,
  BrokerCommand,
  ShellCommand,
  KeygenCommand,
  CompletionCommand,
];
