// Every command class of the CLI, in the order help lists them.

import { CompletionCommand } from './CompletionCommand.js';
import { GatewayCommand } from './GatewayCommand.js';
import { TunnelListCommand } from './TunnelListCommand.js';
import { TunnelStartCommand } from './TunnelStartCommand.js';
import { TunnelStopCommand } from './TunnelStopCommand.js';

export const commandClasses = [TunnelStartCommand, TunnelListCommand, TunnelStopCommand, GatewayCommand, CompletionCommand];
