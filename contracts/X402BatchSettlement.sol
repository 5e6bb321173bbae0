// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title IDepositCollector
/// @notice Pulls a payer's tokens into the settlement contract for one deposit, however the payer authorized it.
interface IDepositCollector {
    /// @notice Moves `amount` of `token` from `payer` to the settlement contract, as `collectorData` authorizes.
    /// @param payer The channel's payer, whose tokens move.
    /// @param token The channel's token.
    /// @param amount The deposit, exactly.
    /// @param channelId The channel the deposit funds (bound into what the payer signed).
    /// @param collectorData The collector's own encoding of the payer's authorization.
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}

/// @title X402BatchSettlement
/// @notice Escrow for the x402 `batch-settlement` scheme: a payer deposits once into a channel, then signs
///         cumulative vouchers off chain; the receiver side claims the latest ones in batches and sweeps what it
///         claimed in one transfer per (receiver, token). Unclaimed escrow goes back by a refund the receiver side
///         grants, or by a timed withdrawal the payer starts.
/// @dev Compatible with the canonical x402BatchSettlement (0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003) in all an
///      outside party sees: EIP-712 domain ("x402 Batch Settlement", "1"), type strings, channel id (the full EIP-712
///      digest of the config), ABI, events and errors. No storage is written by the constructor and the domain is
///      rebuilt for `address(this)`, so the runtime code can be copied to the canonical address on a test chain.
///      Amounts are cumulative: `channels[id].totalClaimed` only grows, and `balance` shrinks only by refunds and
///      withdrawals, so the escrow left to the payer is `balance - totalClaimed`.
contract X402BatchSettlement is EIP712, Multicall, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice What a channel is; its EIP-712 digest is the channel id. The client fills in payer, payerAuthorizer
    ///         and salt; the receiver side publishes the rest.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// @notice A channel's escrow: everything deposited and not yet returned, and the cumulative amount claimed.
    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    /// @notice A timed withdrawal the payer side started; `initiatedAt` is zero when none is pending.
    struct WithdrawalState {
        uint128 amount;
        uint40 initiatedAt;
    }

    /// @notice What a receiver has claimed in a token across its channels, and how much of it was swept to it.
    struct ReceiverState {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    /// @notice What the payer side signs: a ceiling on what may ever be claimed from the channel.
    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @notice One claim row: a signed voucher and the cumulative amount the receiver side claims under it.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    /// @notice The shortest withdrawal delay a channel may have (15 minutes).
    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    /// @notice The longest withdrawal delay a channel may have (30 days).
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    /// @notice EIP-712 type hash of `ChannelConfig`.
    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,"
        "address token,uint40 withdrawDelay,bytes32 salt)"
    );
    /// @notice EIP-712 type hash of what the payer side signs per request.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    /// @notice EIP-712 type hash of a refund the receiverAuthorizer grants.
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    /// @notice EIP-712 type hash of one row of a claim batch.
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    /// @notice EIP-712 type hash of a claim batch the receiverAuthorizer signs.
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    /// @notice Escrow per channel id.
    mapping(bytes32 channelId => ChannelState) public channels;
    /// @notice The nonce the next signed refund of a channel must carry; every executed refund advances it.
    mapping(bytes32 channelId => uint256) public refundNonce;
    /// @notice The pending timed withdrawal per channel id.
    mapping(bytes32 channelId => WithdrawalState) public pendingWithdrawals;
    /// @notice Claimed and swept totals per receiver and token.
    mapping(address receiver => mapping(address token => ReceiverState)) public receivers;

    /// @notice A deposit found the channel's escrow empty and nothing ever claimed from it.
    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    /// @notice A refund or withdrawal left the channel with no escrow and nothing claimed.
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    /// @notice `amount` entered the channel; `newBalance` is its balance afterwards.
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    /// @notice The channel's claimed total rose by `claimAmount` to `newTotalClaimed`.
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
    /// @notice `amount` of claimed `token` went to `receiver`.
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    /// @notice `amount` of unclaimed escrow went back to the payer.
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
    /// @notice The payer side asked for `amount`, payable from `finalizeAfter` on.
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    /// @notice A timed withdrawal paid `amount` to the payer.
    event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);

    /// @notice A zero payer, receiver, receiverAuthorizer or token; or a withdrawal not started by the payer side.
    error InvalidChannel();
    /// @notice A deposit of zero.
    error ZeroDeposit();
    /// @notice The deposit would take the channel's balance past 2^128 - 1.
    error DepositOverflow();
    /// @notice A voucher, claim batch or refund signature is not the expected signer's.
    error InvalidSignature();
    /// @notice A claim batch mixes channels of different receiverAuthorizers.
    error NotReceiverAuthorizer();
    /// @notice `claim` was sent by neither the receiver nor the receiverAuthorizer of a row's channel.
    error NotAuthorizedToClaim();
    /// @notice `refund` was sent by neither the receiver nor the receiverAuthorizer.
    error NotAuthorizedToRefund();
    /// @notice A row claims more than its voucher's ceiling.
    error ClaimExceedsCeiling();
    /// @notice A row claims more than the channel's balance.
    error ClaimExceedsBalance();
    /// @notice A withdrawal is already pending on the channel.
    error WithdrawalAlreadyPending();
    /// @notice No withdrawal is pending on the channel.
    error WithdrawalNotPending();
    /// @notice `finalizeWithdraw` was sent by neither the payer nor the payerAuthorizer.
    error NotAuthorizedToFinalizeWithdraw();
    /// @notice The channel's withdrawal delay has not passed since the withdrawal was started.
    error WithdrawDelayNotElapsed();
    /// @notice A withdrawal of zero.
    error NothingToWithdraw();
    /// @notice The withdrawal asks for more than the unclaimed escrow.
    error WithdrawAmountExceedsAvailable();
    /// @notice The channel's withdrawal delay is outside [MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY].
    error WithdrawDelayOutOfRange();
    /// @notice A claim with no rows.
    error EmptyBatch();
    /// @notice The collector did not raise this contract's token balance by exactly the deposit.
    error DepositCollectionFailed();
    /// @notice The collector is the zero address.
    error InvalidCollector();
    /// @notice A signed refund carries a nonce other than the channel's current one.
    error InvalidRefundNonce();
    /// @notice A refund of zero.
    error ZeroRefund();

    constructor() EIP712("x402 Batch Settlement", "1") {}

    /// @notice Funds the channel `config` with `amount`, pulled from the payer by `collector`. Anyone may send it.
    /// @param config The channel; its first deposit creates it.
    /// @param amount The deposit; the contract's token balance must rise by exactly this much.
    /// @param collector The deposit collector that holds the payer's authorization (ERC-3009 or Permit2).
    /// @param collectorData The payer's authorization, in the collector's encoding.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        _checkNewDeposit(config, amount, collector);
        bytes32 channelId = getChannelId(config);
        ChannelState storage channel = channels[channelId];
        if (amount > type(uint128).max - channel.balance) revert DepositOverflow();
        channel.balance += amount;

        IERC20 token = IERC20(config.token);
        uint256 held = token.balanceOf(address(this));
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        if (token.balanceOf(address(this)) != held + amount) revert DepositCollectionFailed();

        if (channel.balance == amount && channel.totalClaimed == 0) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, channel.balance);
    }

    /// @notice Applies claim rows sent by the receiver or receiverAuthorizer of every row's channel.
    /// @param voucherClaims The rows; a row at or below the channel's claimed total changes nothing.
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        if (voucherClaims.length == 0) revert EmptyBatch();
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            if (!_isReceiverSide(msg.sender, voucherClaims[i].voucher.channel)) revert NotAuthorizedToClaim();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Applies claim rows that their channels' common receiverAuthorizer signed as a `ClaimBatch`.
    ///         Anyone may send it.
    /// @param voucherClaims The rows, all of channels with the same receiverAuthorizer.
    /// @param authorizerSignature The receiverAuthorizer's signature of `getClaimBatchDigest(voucherClaims)`.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        if (voucherClaims.length == 0) revert EmptyBatch();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        bytes32 digest = getClaimBatchDigest(voucherClaims);
        if (!SignatureChecker.isValidSignatureNow(authorizer, digest, authorizerSignature)) revert InvalidSignature();
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            if (voucherClaims[i].voucher.channel.receiverAuthorizer != authorizer) revert NotReceiverAuthorizer();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Sends `receiver` everything it claimed in `token` and was not yet sent. Anyone may call it;
    ///         with nothing to send it does nothing.
    /// @param receiver The receiver to pay.
    /// @param token The token to pay in.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverState storage state = receivers[receiver][token];
        uint128 amount = state.totalClaimed - state.totalSettled;
        if (amount == 0) return;
        state.totalSettled = state.totalClaimed;
        IERC20(token).safeTransfer(receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    /// @notice Starts a timed withdrawal of `amount` of unclaimed escrow (payer or payerAuthorizer only).
    /// @dev Signed but unclaimed vouchers reserve nothing: the receiver side must claim before the delay ends.
    /// @param config The channel.
    /// @param amount What to withdraw; `finalizeWithdraw` pays at most the escrow still unclaimed then.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (!_isPayerSide(msg.sender, config)) revert InvalidChannel();
        if (amount == 0) revert NothingToWithdraw();
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) revert WithdrawalAlreadyPending();
        if (amount > _unclaimed(channels[channelId])) revert WithdrawAmountExceedsAvailable();
        pending.amount = amount;
        pending.initiatedAt = uint40(block.timestamp);
        emit WithdrawInitiated(channelId, amount, uint40(block.timestamp) + config.withdrawDelay);
    }

    /// @notice Pays out the pending withdrawal once the channel's delay has passed (payer or payerAuthorizer only).
    /// @param config The channel.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        if (!_isPayerSide(msg.sender, config)) revert NotAuthorizedToFinalizeWithdraw();
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt == 0) revert WithdrawalNotPending();
        if (block.timestamp < uint256(pending.initiatedAt) + config.withdrawDelay) revert WithdrawDelayNotElapsed();

        ChannelState storage channel = channels[channelId];
        uint128 amount = _min(pending.amount, _unclaimed(channel));
        delete pendingWithdrawals[channelId];
        channel.balance -= amount;
        emit WithdrawFinalized(channelId, msg.sender, amount);
        if (channel.balance == 0 && channel.totalClaimed == 0) emit ChannelClosed(channelId, config);
        if (amount > 0) IERC20(config.token).safeTransfer(config.payer, amount);
    }

    /// @notice Returns up to `amount` of unclaimed escrow to the payer (receiver or receiverAuthorizer only).
    /// @dev Advances `refundNonce`, so a signed refund for the old nonce can no longer be used.
    /// @param config The channel.
    /// @param amount The most to return; capped at the unclaimed escrow.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (!_isReceiverSide(msg.sender, config)) revert NotAuthorizedToRefund();
        _refund(config, amount);
    }

    /// @notice Returns up to `amount` of unclaimed escrow to the payer, as the receiverAuthorizer signed.
    ///         Anyone may send it.
    /// @param config The channel.
    /// @param amount The signed amount; capped at the unclaimed escrow.
    /// @param nonce The channel's current `refundNonce`, which the signature covers.
    /// @param receiverAuthorizerSignature The receiverAuthorizer's signature of `getRefundDigest`.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = getChannelId(config);
        if (nonce != refundNonce[channelId]) revert InvalidRefundNonce();
        bytes32 digest = getRefundDigest(channelId, nonce, amount);
        if (!SignatureChecker.isValidSignatureNow(config.receiverAuthorizer, digest, receiverAuthorizerSignature)) {
            revert InvalidSignature();
        }
        _refund(config, amount);
    }

    /// @notice The channel id of `config`: its EIP-712 digest under this contract's domain (so bound to the chain
    ///         and to this contract).
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH, config)));
    }

    /// @notice The EIP-712 digest the payer side signs for a voucher.
    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    /// @notice The EIP-712 digest the receiverAuthorizer signs for a refund.
    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice The EIP-712 digest the receiverAuthorizer signs for a claim batch: the array of `ClaimEntry` is
    ///         hashed as EIP-712 says, the keccak of its members' struct hashes laid end to end.
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        bytes32[] memory entryHashes = new bytes32[](voucherClaims.length);
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            entryHashes[i] = _claimEntryHash(voucherClaims[i]);
        }
        bytes32 claimsHash = keccak256(abi.encodePacked(entryHashes));
        return _hashTypedDataV4(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, claimsHash)));
    }

    function _claimEntryHash(VoucherClaim calldata row) private view returns (bytes32) {
        bytes32 channelId = getChannelId(row.voucher.channel);
        return keccak256(abi.encode(CLAIM_ENTRY_TYPEHASH, channelId, row.voucher.maxClaimableAmount, row.totalClaimed));
    }

    function _checkNewDeposit(ChannelConfig calldata config, uint128 amount, address collector) private pure {
        if (config.payer == address(0) || config.receiver == address(0)) revert InvalidChannel();
        if (config.receiverAuthorizer == address(0) || config.token == address(0)) revert InvalidChannel();
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange();
        }
        if (amount == 0) revert ZeroDeposit();
        if (collector == address(0)) revert InvalidCollector();
    }

    /// @dev Raises the channel's claimed total to the row's, within its voucher's ceiling and the channel's balance.
    function _applyClaim(VoucherClaim calldata row) private {
        ChannelConfig calldata config = row.voucher.channel;
        bytes32 channelId = getChannelId(config);
        ChannelState storage channel = channels[channelId];
        uint128 target = row.totalClaimed;
        if (target <= channel.totalClaimed) return; // stale or replayed: already applied
        if (target > row.voucher.maxClaimableAmount) revert ClaimExceedsCeiling();
        if (target > channel.balance) revert ClaimExceedsBalance();
        _checkVoucherSignature(config, getVoucherDigest(channelId, row.voucher.maxClaimableAmount), row.signature);

        uint128 delta = target - channel.totalClaimed;
        channel.totalClaimed = target;
        receivers[config.receiver][config.token].totalClaimed += delta;
        emit Claimed(channelId, msg.sender, delta, target);
    }

    /// @dev A set payerAuthorizer must be an ECDSA signer; without one, the payer signs (EOA or EIP-1271 wallet).
    function _checkVoucherSignature(ChannelConfig calldata config, bytes32 digest, bytes calldata signature)
        private
        view
    {
        bool valid = config.payerAuthorizer != address(0)
            ? ECDSA.recoverCalldata(digest, signature) == config.payerAuthorizer
            : SignatureChecker.isValidSignatureNow(config.payer, digest, signature);
        if (!valid) revert InvalidSignature();
    }

    /// @dev The nonce advances before anything else, even when nothing is left to return.
    function _refund(ChannelConfig calldata config, uint128 amount) private {
        if (amount == 0) revert ZeroRefund();
        bytes32 channelId = getChannelId(config);
        unchecked {
            ++refundNonce[channelId];
        }
        ChannelState storage channel = channels[channelId];
        uint128 returned = _min(amount, _unclaimed(channel));
        if (returned == 0) return;
        channel.balance -= returned;
        _shrinkPendingWithdrawal(pendingWithdrawals[channelId], returned);
        emit Refunded(channelId, msg.sender, returned);
        if (channel.balance == 0 && channel.totalClaimed == 0) emit ChannelClosed(channelId, config);
        IERC20(config.token).safeTransfer(config.payer, returned);
    }

    /// @dev What a refund returned no longer needs withdrawing; a withdrawal it covers entirely is cancelled.
    function _shrinkPendingWithdrawal(WithdrawalState storage pending, uint128 returned) private {
        if (pending.initiatedAt == 0) return;
        if (returned >= pending.amount) {
            pending.amount = 0;
            pending.initiatedAt = 0;
        } else {
            pending.amount -= returned;
        }
    }

    function _isReceiverSide(address sender, ChannelConfig calldata config) private pure returns (bool) {
        return sender == config.receiver || sender == config.receiverAuthorizer;
    }

    function _isPayerSide(address sender, ChannelConfig calldata config) private pure returns (bool) {
        return sender == config.payer || sender == config.payerAuthorizer;
    }

    function _unclaimed(ChannelState storage channel) private view returns (uint128) {
        return channel.balance - channel.totalClaimed;
    }

    function _min(uint128 a, uint128 b) private pure returns (uint128) {
        return a < b ? a : b;
    }
}
