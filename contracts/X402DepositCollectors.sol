// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ISignatureTransfer} from "./Permit2.sol";
import {IDepositCollector} from "./X402BatchSettlement.sol";

/// @title IERC3009Receive
/// @notice The one EIP-3009 function a deposit needs: `receiveWithAuthorization` with a `bytes` signature.
interface IERC3009Receive {
    /// @notice Moves `value` from `from` to `to` as `from` signed; only `to` may submit it.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;
}

/// @title X402DepositCollector
/// @notice What every batch-settlement deposit collector shares: only the settlement contract may call `collect`,
///         so nobody can replay a payer's deposit authorization into anything but a deposit.
/// @dev The settlement address is a compile-time constant (the canonical one), so collectors keep no constructor
///      state and their runtime code can be copied to their canonical addresses on a test chain.
abstract contract X402DepositCollector is IDepositCollector {
    /// @notice The settlement contract this collector serves, and the only caller it accepts.
    address public constant x402BatchSettlement = 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003;

    /// @notice `collect` was called by someone other than the settlement contract.
    error OnlyX402BatchSettlement();

    modifier onlyx402BatchSettlement() {
        if (msg.sender != x402BatchSettlement) revert OnlyX402BatchSettlement();
        _;
    }
}

/// @title ERC3009DepositCollector
/// @notice Collects a deposit with the payer's EIP-3009 `ReceiveWithAuthorization` naming this collector as payee,
///         then forwards it to the settlement contract.
/// @dev Canonical address 0x4020806089470a89826cB9fB1f4059150b550004. `collectorData` is
///      `abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`, and the authorization's
///      nonce must be `keccak256(abi.encode(channelId, salt))`: the signature is bound to the channel.
contract ERC3009DepositCollector is X402DepositCollector {
    using SafeERC20 for IERC20;

    /// @inheritdoc IDepositCollector
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
        override
        onlyx402BatchSettlement
    {
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IERC3009Receive(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, nonce, signature
        );
        IERC20(token).safeTransfer(x402BatchSettlement, amount);
    }
}

/// @title Permit2DepositCollector
/// @notice Collects a deposit with the payer's Permit2 `PermitWitnessTransferFrom` naming this collector as spender
///         and the channel in a `DepositWitness`; Permit2 moves the tokens straight to the settlement contract.
/// @dev Canonical address 0x4020425FAf3B746C082C2f942b4E5159887B0005. `collectorData` is
///      `abi.encode(uint256 nonce, uint256 deadline, bytes permit2Signature, bytes eip2612Permit)`; a non-empty
///      `eip2612Permit` is `abi.encode(value, deadline, v, r, s)`, the payer's EIP-2612 approval of Permit2, tried
///      first (a failing `permit` is reported by an event, then the transfer is attempted anyway).
contract Permit2DepositCollector is X402DepositCollector {
    /// @notice The canonical Permit2.
    ISignatureTransfer public constant PERMIT2 = ISignatureTransfer(0x000000000022D473030F116dDEE9F6B43aC78BA3);

    /// @notice The tail that Permit2 appends to its `PermitWitnessTransferFrom(...,` stub (types sorted by name).
    string public constant DEPOSIT_WITNESS_TYPE_STRING =
        "DepositWitness witness)DepositWitness(bytes32 channelId)TokenPermissions(address token,uint256 amount)";

    /// @notice EIP-712 type hash of the witness.
    bytes32 public constant DEPOSIT_WITNESS_TYPEHASH = keccak256("DepositWitness(bytes32 channelId)");

    /// @notice The EIP-2612 permit's value differs from the deposit.
    error Permit2612AmountMismatch();

    /// @notice The token's `permit` reverted with `Error(string)`; the deposit went on without it.
    event EIP2612PermitFailedWithReason(address indexed token, address indexed owner, string reason);
    /// @notice The token's `permit` reverted with `Panic(uint256)`; the deposit went on without it.
    event EIP2612PermitFailedWithPanic(address indexed token, address indexed owner, uint256 errorCode);
    /// @notice The token's `permit` reverted with a custom error or no data; the deposit went on without it.
    event EIP2612PermitFailedWithData(address indexed token, address indexed owner, bytes data);

    /// @inheritdoc IDepositCollector
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
        override
        onlyx402BatchSettlement
    {
        (uint256 nonce, uint256 deadline, bytes memory signature, bytes memory permit2612) =
            abi.decode(collectorData, (uint256, uint256, bytes, bytes));
        if (permit2612.length > 0) _tryPermit2612(payer, token, amount, permit2612);
        PERMIT2.permitWitnessTransferFrom(
            ISignatureTransfer.PermitTransferFrom({
                permitted: ISignatureTransfer.TokenPermissions({token: token, amount: amount}),
                nonce: nonce,
                deadline: deadline
            }),
            ISignatureTransfer.SignatureTransferDetails({to: x402BatchSettlement, requestedAmount: amount}),
            payer,
            keccak256(abi.encode(DEPOSIT_WITNESS_TYPEHASH, channelId)),
            DEPOSIT_WITNESS_TYPE_STRING,
            signature
        );
    }

    function _tryPermit2612(address payer, address token, uint256 amount, bytes memory permit2612) private {
        (uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s) =
            abi.decode(permit2612, (uint256, uint256, uint8, bytes32, bytes32));
        if (value != amount) revert Permit2612AmountMismatch();
        try IERC20Permit(token).permit(payer, address(PERMIT2), value, deadline, v, r, s) {}
        catch Error(string memory reason) {
            emit EIP2612PermitFailedWithReason(token, payer, reason);
        } catch Panic(uint256 errorCode) {
            emit EIP2612PermitFailedWithPanic(token, payer, errorCode);
        } catch (bytes memory data) {
            emit EIP2612PermitFailedWithData(token, payer, data);
        }
    }
}
